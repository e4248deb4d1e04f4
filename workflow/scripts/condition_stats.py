import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

from actbridge.injection.conditions import condition_labels, rescaled_twins
from actbridge.integrity import quarantine_all, read_table, start_job
from actbridge.io import write_parquet
from actbridge.schemas import JOB_SCHEMA
from actbridge.stats.paired import StatsSettings, condition_statistics, injection_rows_problem

start_job(snakemake)
examples = read_table(snakemake.input.eval, columns=["example_id", "mode"])
injection = snakemake.params.injection
labels = condition_labels(injection["conditions"], injection["alphas"])
tables = {path: read_table(path, JOB_SCHEMA) for path in snakemake.input.injections}
problems = {path: injection_rows_problem(table, examples, roles=injection["roles"], labels=labels)
            for path, table in tables.items()}
if any(problems.values()):  # every incomplete seed at once: one rerun rebuilds them all
    quarantine_all({path: problem for path, problem in problems.items() if problem})
results = {table.column("seed")[0].as_py(): table for table in tables.values()}
per_seed, across_seeds = condition_statistics(results, snakemake.wildcards.pair, snakemake.wildcards.method,
                                              settings=StatsSettings.from_config(snakemake.params.settings),
                                              twins=rescaled_twins())
write_parquet(per_seed, snakemake.output.per_seed)
write_parquet(across_seeds, snakemake.output.across_seeds)
