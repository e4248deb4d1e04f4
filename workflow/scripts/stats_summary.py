import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow as pa

from actbridge.integrity import read_table, start_job
from actbridge.io import write_parquet, write_text
from actbridge.stats.paired import ACROSS_SEEDS_SCHEMA, PER_SEED_SCHEMA
from actbridge.injection.conditions import CONDITIONS
from actbridge.kv.conditions import KV_CONDITIONS
from actbridge.stats.summaries import stats_markdown

start_job(snakemake)
per_seed = pa.concat_tables([read_table(path, PER_SEED_SCHEMA) for path in snakemake.input.per_seed])
across_seeds = pa.concat_tables([read_table(path, ACROSS_SEEDS_SCHEMA)
                                 for path in snakemake.input.across_seeds])
write_parquet(per_seed, snakemake.output.per_seed)
write_parquet(across_seeds, snakemake.output.across_seeds)
write_text(stats_markdown(across_seeds, snakemake.params.confidence,
                          formulas={condition.name: condition.formula  # the residual channel's words for none
                                    for condition in [*KV_CONDITIONS.values(), *CONDITIONS.values()]}),
           snakemake.output.markdown)
