import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow.parquet as pq

from actbridge.activations import PROMPT_FOR_MODEL, ExtractionPlan, extract_activations
from actbridge.layout import resolve_layers
from actbridge.logs import log_to_file
from actbridge.models import (configure_threads, load_model, load_tokenizer, read_model_record, resolve_device,
                              resolve_dtype)

log_to_file(snakemake.log[0])
configure_threads(snakemake.config["threads"] or snakemake.threads)
device = resolve_device(snakemake.config["device"])
model = load_model(snakemake.input.model, device, resolve_dtype(snakemake.params.dtype))
settings = snakemake.params.settings
plan = ExtractionPlan(layers=resolve_layers(snakemake.params.layers, model.config.num_hidden_layers),
                      roles=tuple(settings["roles"]), prompt=PROMPT_FOR_MODEL[snakemake.wildcards.model],
                      dtype=settings["dtype"], shard_rows=settings["shard_rows"], batch_size=settings["batch_size"])
identity = {**read_model_record(snakemake.input.model), "device": str(device), "model_dtype": snakemake.params.dtype}
extract_activations(model, load_tokenizer(snakemake.input.model), pq.read_table(snakemake.input.examples), plan,
                    snakemake.output[0], identity, device=device)
