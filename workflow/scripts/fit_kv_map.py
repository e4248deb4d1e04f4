import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

from actbridge.integrity import read_table, start_job
from actbridge.io import atomic_directory
from actbridge.kv.fit import fit_kv_map, shared_texts
from actbridge.models.loading import load_for_job

start_job(snakemake)
threads = snakemake.config["threads"] or snakemake.threads
sender, receiver = (load_for_job(snakemake.input[side], snakemake.config["device"], snakemake.params.dtype, threads)
                    for side in ("sender", "receiver"))
kv_map = fit_kv_map(snakemake.wildcards.kv_map, sender, receiver, shared_texts(read_table(snakemake.input.bridge_train)),
                    shared_texts(read_table(snakemake.input.bridge_val)),
                    settings=snakemake.params.settings["settings"], batch_tokens=snakemake.config["batch_tokens"])
with atomic_directory(snakemake.output[0]) as directory:
    kv_map.save(directory, {"settings": snakemake.params.settings})
