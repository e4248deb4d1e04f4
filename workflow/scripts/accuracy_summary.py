import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import polars as pl
import pyarrow.parquet as pq

from actbridge.markdown import to_arrow
from actbridge.stats.summaries import accuracy_markdown
from actbridge.io import write_parquet, write_text
from actbridge.integrity import start_job

start_job(snakemake)
# one lazy scan over every model's file; written with the files' own schema
table = to_arrow(pl.scan_parquet(list(snakemake.input)).collect(), pq.read_schema(snakemake.input[0]))
write_parquet(table, snakemake.output.table)
write_text(accuracy_markdown(table), snakemake.output.markdown)
