import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import polars as pl

from actbridge.bridges.jobs import METRICS_SCHEMA, metrics_markdown
from actbridge.io import write_parquet, write_text
from actbridge.integrity import start_job
from actbridge.markdown import to_arrow

start_job(snakemake)
# one lazy scan over every bridge job's metrics
table = to_arrow(pl.scan_parquet([f"{directory}/metrics.parquet" for directory in snakemake.input]).collect(),
                 METRICS_SCHEMA)
write_parquet(table, snakemake.output.table)
write_text(metrics_markdown(table), snakemake.output.markdown)
