import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

from actbridge.io import read_parquet_output, write_parquet, write_text
from actbridge.logs import log_to_file
from actbridge.schemas import EFFECT_SCHEMA
from actbridge.stats.paired import ACROSS_SEEDS_SCHEMA
from actbridge.stats.verdict import verdict_markdown, verdict_table

log_to_file(snakemake.log[0])
table = verdict_table(read_parquet_output(snakemake.input.across_seeds, ACROSS_SEEDS_SCHEMA),
                      read_parquet_output(snakemake.input.sender, EFFECT_SCHEMA),
                      read_parquet_output(snakemake.input.receiver, EFFECT_SCHEMA),
                      confidence=snakemake.params.confidence)
write_parquet(table, snakemake.output.table)
write_text(verdict_markdown(table, snakemake.params.confidence), snakemake.output.markdown)
