import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package


from actbridge.activations.store import PROMPT_FOR_MODEL, ExtractionPlan, extract_activations
from actbridge.activations.layers import resolve_layers
from actbridge.integrity import read_table, start_job
from actbridge.models.loading import load_for_job
from actbridge.models.weights import read_model_record

start_job(snakemake)
handle = load_for_job(snakemake.input.model, snakemake.config["device"], snakemake.params.dtype,
                      snakemake.config["threads"] or snakemake.threads)
settings = snakemake.params.settings
plan = ExtractionPlan(layers=resolve_layers(snakemake.params.layers, handle.shape["num_layers"]),
                      roles=tuple(settings["roles"]), prompt=PROMPT_FOR_MODEL[snakemake.wildcards.model],
                      dtype=settings["dtype"], shard_rows=settings["shard_rows"], batch_size=settings["batch_size"])
identity = {**read_model_record(snakemake.input.model), "device": str(handle.device), "model_dtype": snakemake.params.dtype}
extract_activations(handle, read_table(snakemake.input.examples), plan=plan, out_dir=snakemake.output[0],
                    identity=identity)
