import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

from actbridge.integrity import quarantine_all, read_table, rows_problem, start_job
from actbridge.io import write_parquet, write_text
from actbridge.schemas import EFFECT_SCHEMA
from actbridge.stats.paired import ACROSS_SEEDS_SCHEMA
from actbridge.kv.conditions import upper_bounds
from actbridge.stats.verdict import VerdictSettings, verdict_markdown, verdict_table

start_job(snakemake, unread=("sender_model", "receiver_model"))  # their depths are in params
tables = {"across_seeds": ACROSS_SEEDS_SCHEMA, "sender": EFFECT_SCHEMA, "receiver": EFFECT_SCHEMA}
tables = {name: read_table(snakemake.input[name], schema) for name, schema in tables.items()}
problems = {snakemake.input[name]: rows_problem(tables[name], expected)  # the rows the config asks of each
            for name, expected in snakemake.params.expected.items()}
if any(problems.values()):
    quarantine_all({path: problem for path, problem in problems.items() if problem})
settings = VerdictSettings.from_config(snakemake.params.settings)
table = verdict_table(tables["across_seeds"], tables["sender"], tables["receiver"], settings=settings,
                      upper_bounds=frozenset({"self_patch", *upper_bounds()}))
write_parquet(table, snakemake.output.table)
write_text(verdict_markdown(table, settings), snakemake.output.markdown)
