import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import torch

from actbridge.activations import ActivationStore
from actbridge.bridge_runs import run_bridge_job
from actbridge.bridges import BridgeSettings
from actbridge.io import atomic_directory, write_parquet
from actbridge.layout import parse_pair
from actbridge.logs import log_to_file

log_to_file(snakemake.log[0])
torch.set_num_threads(snakemake.config["threads"] or snakemake.threads)  # no transformers import: seconds per job
stores = {model: {split: ActivationStore(snakemake.input[f"{model}_{split}"], quarantine=True)
                  for split in ("bridge_train", "bridge_val", "eval")} for model in ("sender", "receiver")}
sender_layer, receiver_layer = parse_pair(snakemake.wildcards.pair)
seed = int(snakemake.wildcards.seed)
provenance = {"settings": snakemake.params.settings, "seed": seed,
              "sender": stores["sender"]["bridge_train"].manifest["model"],
              "receiver": stores["receiver"]["bridge_train"].manifest["model"]}
with atomic_directory(snakemake.output[0]) as out_dir:
    metrics = run_bridge_job(stores, sender_layer, receiver_layer, snakemake.wildcards.method, seed,
                             snakemake.params.roles, snakemake.params.fit_modes, snakemake.params.eval_modes,
                             BridgeSettings.from_config(snakemake.params.settings), out_dir, provenance)
    write_parquet(metrics, out_dir / "metrics.parquet")
