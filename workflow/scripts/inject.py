import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package


from actbridge.activations.store import ActivationStore
from actbridge.bridges.jobs import BridgeRun
from actbridge.injection.conditions import STORE_INPUTS
from actbridge.injection.jobs import run_injection_job
from actbridge.io import write_parquet
from actbridge.integrity import read_table, start_job
from actbridge.models.loading import load_for_job

start_job(snakemake)
handle = load_for_job(snakemake.input.receiver, snakemake.config["device"], snakemake.params.dtype,
                     snakemake.config["threads"] or snakemake.threads)
settings = snakemake.params.settings
stores = {name: ActivationStore(path, quarantine=True) for name, path in snakemake.input.items()
          if name in STORE_INPUTS}
table = run_injection_job(handle, read_table(snakemake.input.eval), snakemake.input.bridge,
                          BridgeRun.from_wildcards(
                              snakemake.wildcards.pair, snakemake.wildcards.method, snakemake.wildcards.seed), stores=stores, roles=settings["roles"],
                          conditions=settings["conditions"], alphas=settings["alphas"],
                          condition_settings=settings.get("condition_settings"),
                          batch_tokens=snakemake.config["batch_tokens"])
write_parquet(table, snakemake.output[0])
