import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow as pa
import pyarrow.parquet as pq

from actbridge.stats.summaries import accuracy_markdown
from actbridge.io import write_parquet, write_text
from actbridge.logs import log_to_file

log_to_file(snakemake.log[0])
table = pa.concat_tables([pq.read_table(path) for path in snakemake.input])
write_parquet(table, snakemake.output.table)
write_text(accuracy_markdown(table), snakemake.output.markdown)
