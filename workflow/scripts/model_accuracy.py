import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow.parquet as pq

from actbridge.evaluation import evaluate_model_accuracy
from actbridge.io import write_parquet
from actbridge.logs import log_to_file
from actbridge.models import configure_threads, load_model, load_tokenizer, resolve_device, resolve_dtype

log_to_file(snakemake.log[0])
configure_threads(snakemake.config["threads"] or snakemake.threads)
device = resolve_device(snakemake.config["device"])
model = load_model(snakemake.input.model, device, resolve_dtype(snakemake.params.dtype))
table = evaluate_model_accuracy(model, load_tokenizer(snakemake.input.model), pq.read_table(snakemake.input.eval),
                                snakemake.wildcards.model, device=device)
write_parquet(table, snakemake.output[0])
