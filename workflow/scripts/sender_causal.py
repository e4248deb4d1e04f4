import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow as pa

from actbridge.activations.store import ActivationStore
from actbridge.causal.profiles import ablation_effects, causal_markdown, patching_effects, sender_causal_tables
from actbridge.io import write_parquet, write_text
from actbridge.integrity import read_table, start_job
from actbridge.models.loading import load_for_job
from actbridge.stats.paired import StatsSettings

start_job(snakemake)
handle = load_for_job(snakemake.input.model, snakemake.config["device"], snakemake.params.dtype,
                     snakemake.config["threads"] or snakemake.threads)
ablations, patches = sender_causal_tables(
    handle, read_table(snakemake.input.eval), layers=snakemake.params.layers,
    roles=snakemake.params.roles, eval_store=ActivationStore(snakemake.input.eval_states, quarantine=True),
    train_store=ActivationStore(snakemake.input.train_states, quarantine=True),
    batch_tokens=snakemake.config["batch_tokens"])
settings = StatsSettings.from_config(snakemake.params.stats)
effects = pa.concat_tables([ablation_effects(ablations, settings)]
                           + ([patching_effects(patches, settings)] if patches.num_rows else []))
write_parquet(ablations, snakemake.output.examples)
write_parquet(patches, snakemake.output.patching)
write_parquet(effects, snakemake.output.table)
write_text(causal_markdown(effects, settings.confidence), snakemake.output.markdown)
