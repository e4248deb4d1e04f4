import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package


from actbridge.activations.store import ActivationStore
from actbridge.bridges.jobs import BridgeRun, fit_groups, run_bridge_job
from actbridge.bridges.methods import BRIDGE_METHODS
from actbridge.io import atomic_directory, write_parquet
from actbridge.integrity import read_table, start_job

start_job(snakemake)
run = BridgeRun.from_wildcards(snakemake.wildcards.pair, snakemake.wildcards.method, snakemake.wildcards.seed)
method = BRIDGE_METHODS[run.method]
if method.uses_torch:  # torch only where a method trains with it: its import is most of a closed-form job
    import torch

    torch.set_num_threads(snakemake.config["threads"] or snakemake.threads)
stores = {model: {split: ActivationStore(snakemake.input[f"{model}_{split}"], quarantine=True)
                  for split in ("bridge_train", "bridge_val", "eval")} for model in ("sender", "receiver")}
provenance = {"settings": snakemake.params.settings, "seed": run.seed,
              "sender": stores["sender"]["bridge_train"].manifest["model"],
              "receiver": stores["receiver"]["bridge_train"].manifest["model"]}
trainer = None
if method.through_receiver:  # it runs the receiver (transformers is imported only here)
    from actbridge.bridges.through_receiver import receiver_trainer
    from actbridge.models.loading import load_for_job

    receiver = load_for_job(snakemake.input.receiver, snakemake.config["device"], snakemake.params.settings["dtype"])
    trainer = receiver_trainer(receiver,
                               {split: read_table(snakemake.input[split]) for split in ("bridge_train", "bridge_val")},
                               stores["sender"], run.sender_layer, run.receiver_layer,
                               method.trainer_settings(method.settings(snakemake.params.settings)), run.seed)
with atomic_directory(snakemake.output[0]) as out_dir:
    fit = snakemake.params.fit
    groups = fit_groups(fit["strategy"], fit["context_modes"], fit.get("pooled_modes", ()),
                        through_receiver=method.through_receiver)
    metrics = run_bridge_job(stores, run, roles=snakemake.params.roles, groups=groups,
                             settings=snakemake.params.settings,
                             out_dir=out_dir, provenance=provenance, train_through_receiver=trainer)
    write_parquet(metrics, out_dir / "metrics.parquet")
