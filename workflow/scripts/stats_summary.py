import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow as pa

from actbridge.io import read_parquet_output, write_parquet, write_text
from actbridge.logs import log_to_file
from actbridge.stats.paired import ACROSS_SEEDS_SCHEMA, PER_SEED_SCHEMA
from actbridge.injection.conditions import CONDITIONS
from actbridge.stats.summaries import stats_markdown

log_to_file(snakemake.log[0])
per_seed = pa.concat_tables([read_parquet_output(path, PER_SEED_SCHEMA) for path in snakemake.input.per_seed])
across_seeds = pa.concat_tables([read_parquet_output(path, ACROSS_SEEDS_SCHEMA)
                                 for path in snakemake.input.across_seeds])
write_parquet(per_seed, snakemake.output.per_seed)
write_parquet(across_seeds, snakemake.output.across_seeds)
write_text(stats_markdown(across_seeds, snakemake.params.confidence,
                          formulas={condition.name: condition.formula for condition in CONDITIONS.values()}),
           snakemake.output.markdown)
