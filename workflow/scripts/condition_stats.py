import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

from actbridge.io import read_parquet_output, write_parquet
from actbridge.logs import log_to_file
from actbridge.schemas import JOB_SCHEMA
from actbridge.stats.paired import StatsSettings
from actbridge.injection.conditions import rescaled_twins
from actbridge.stats.paired import condition_statistics

log_to_file(snakemake.log[0])
results = {}
for path in snakemake.input:
    table = read_parquet_output(path, JOB_SCHEMA)
    results[table.column("seed")[0].as_py()] = table
per_seed, across_seeds = condition_statistics(results, snakemake.wildcards.pair, snakemake.wildcards.method,
                                              settings=StatsSettings.from_config(snakemake.params.settings),
                                              twins=rescaled_twins())
write_parquet(per_seed, snakemake.output.per_seed)
write_parquet(across_seeds, snakemake.output.across_seeds)
