import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

from actbridge.integrity import quarantine, read_table, start_job
from actbridge.io import write_parquet
from actbridge.kv import ROLE, kv_method, kv_pair, partial_examples
from actbridge.kv.conditions import scored_labels
from actbridge.schemas import JOB_SCHEMA
from actbridge.stats.paired import StatsSettings, condition_statistics, injection_rows_problem

start_job(snakemake)
rows = read_table(snakemake.input.injection, JOB_SCHEMA)
examples = partial_examples(read_table(snakemake.input.eval, columns=["example_id", "mode"]))
labels = [(name, None) for name in scored_labels(snakemake.params.conditions)]
if problem := injection_rows_problem(rows, examples, roles=[ROLE], labels=labels):
    quarantine(snakemake.input.injection, problem)
per_seed, across_seeds = condition_statistics({0: rows}, kv_pair(snakemake.wildcards.sent),
                                              kv_method(snakemake.wildcards.kv_map),
                                              settings=StatsSettings.from_config(snakemake.params.settings), twins={})
write_parquet(per_seed, snakemake.output.per_seed)
write_parquet(across_seeds, snakemake.output.across_seeds)
