import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

from actbridge.integrity import read_table, require_rows, start_job
from actbridge.io import write_parquet, write_text
from actbridge.schemas import EFFECT_SCHEMA
from actbridge.stats.paired import ACROSS_SEEDS_SCHEMA
from actbridge.stats.verdict import verdict_markdown, verdict_table

start_job(snakemake)
tables = {"across_seeds": ACROSS_SEEDS_SCHEMA, "sender": EFFECT_SCHEMA, "receiver": EFFECT_SCHEMA}
tables = {name: read_table(snakemake.input[name], schema) for name, schema in tables.items()}
for name, expected in snakemake.params.expected.items():  # the rows the config asks of each table
    require_rows(snakemake.input[name], tables[name], expected, what="the config asks for")
table = verdict_table(tables["across_seeds"], tables["sender"], tables["receiver"],
                      confidence=snakemake.params.confidence)
write_parquet(table, snakemake.output.table)
write_text(verdict_markdown(table, snakemake.params.confidence), snakemake.output.markdown)
