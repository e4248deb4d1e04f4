import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow.parquet as pq

from actbridge.models.scoring import evaluate_model_accuracy
from actbridge.io import write_parquet
from actbridge.logs import log_to_file
from actbridge.models.loading import load_for_job

log_to_file(snakemake.log[0])
handle = load_for_job(snakemake.input.model, snakemake.config["device"], snakemake.params.dtype,
                     snakemake.config["threads"] or snakemake.threads)
table = evaluate_model_accuracy(handle, pq.read_table(snakemake.input.eval),
                                model_name=snakemake.wildcards.model, batch_tokens=snakemake.config["batch_tokens"])
write_parquet(table, snakemake.output[0])
