import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

from actbridge.integrity import read_table, start_job
from actbridge.io import write_parquet
from actbridge.kv.channel import Channel, kv_channel_rows, tag_kv_rows
from actbridge.kv.fit import FittedKVMap
from actbridge.models.loading import load_for_job

start_job(snakemake)
threads = snakemake.config["threads"] or snakemake.threads
sender, receiver = (load_for_job(snakemake.input[side], snakemake.config["device"], snakemake.params.dtype, threads)
                    for side in ("sender", "receiver"))
settings = snakemake.params.settings
rows = kv_channel_rows(Channel.of(sender, receiver, FittedKVMap.load(snakemake.input.map)),
                       read_table(snakemake.input.eval), conditions=settings["conditions"],
                       layers_sent=snakemake.params.blocks, seed=settings["seed"],
                       batch_tokens=snakemake.config["batch_tokens"])
write_parquet(tag_kv_rows(rows, kind=snakemake.wildcards.kv_map, sent=snakemake.wildcards.sent,
                          blocks=snakemake.params.blocks), snakemake.output[0])
