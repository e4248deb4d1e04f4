import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow as pa

from actbridge.causal.profiles import (EFFECT_SCHEMA, patching_effects, receiver_causal_markdown, receiver_causal_tables,
                              self_patch_effects)
from actbridge.io import write_parquet, write_text
from actbridge.integrity import read_table, start_job
from actbridge.models.loading import load_for_job
from actbridge.stats.paired import StatsSettings

start_job(snakemake, unread=("sender",))  # only the sender's depth, a param
handle = load_for_job(snakemake.input.model, snakemake.config["device"], snakemake.params.dtype,
                     snakemake.config["threads"] or snakemake.threads)
patches, self_patches = receiver_causal_tables(handle, read_table(snakemake.input.eval),
                                               layers=snakemake.params.layers, roles=snakemake.params.roles,
                                               batch_tokens=snakemake.config["batch_tokens"])
settings = StatsSettings.from_config(snakemake.params.stats)
effects = [patching_effects(patches, settings)] if patches.num_rows else []
effects += [self_patch_effects(self_patches, settings)] if self_patches.num_rows else []
write_parquet(patches, snakemake.output.patching)
write_parquet(self_patches, snakemake.output.self_patch)
table = pa.concat_tables(effects) if effects else EFFECT_SCHEMA.empty_table()
write_parquet(table, snakemake.output.table)
write_text(receiver_causal_markdown(table, settings.confidence), snakemake.output.markdown)
