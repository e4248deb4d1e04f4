import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow.parquet as pq

from actbridge.activations.store import ActivationStore
from actbridge.injection.jobs import run_injection_job
from actbridge.io import write_parquet
from actbridge.activations.layers import parse_pair
from actbridge.logs import log_to_file
from actbridge.models.loading import load_for_job

log_to_file(snakemake.log[0])
model, tokenizer, _ = load_for_job(snakemake.input.receiver, snakemake.config["device"], snakemake.params.dtype,
                                   snakemake.config["threads"] or snakemake.threads)
sender_layer, receiver_layer = parse_pair(snakemake.wildcards.pair)
settings = snakemake.params.settings
table = run_injection_job(model, tokenizer, pq.read_table(snakemake.input.eval),
                          snakemake.input.bridge, ActivationStore(snakemake.input.sender_eval, quarantine=True),
                          ActivationStore(snakemake.input.receiver_eval, quarantine=True), sender_layer,
                          receiver_layer, snakemake.wildcards.method, int(snakemake.wildcards.seed),
                          roles=settings["roles"], conditions=settings["conditions"], alphas=settings["alphas"],
                          batch_tokens=snakemake.config["batch_tokens"])
write_parquet(table, snakemake.output[0])
