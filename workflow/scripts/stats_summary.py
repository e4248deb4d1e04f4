import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow as pa
import pyarrow.parquet as pq

from actbridge.io import write_parquet, write_text
from actbridge.logs import log_to_file
from actbridge.summaries import stats_markdown

log_to_file(snakemake.log[0])
per_seed = pa.concat_tables([pq.read_table(path) for path in snakemake.input.per_seed])
across_seeds = pa.concat_tables([pq.read_table(path) for path in snakemake.input.across_seeds])
write_parquet(per_seed, snakemake.output.per_seed)
write_parquet(across_seeds, snakemake.output.across_seeds)
write_text(stats_markdown(across_seeds, snakemake.params.confidence), snakemake.output.markdown)
