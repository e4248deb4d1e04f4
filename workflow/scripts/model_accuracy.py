import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package


from actbridge.models.scoring import evaluate_model_accuracy
from actbridge.io import write_parquet
from actbridge.integrity import read_table, start_job
from actbridge.models.loading import load_for_job

start_job(snakemake)
handle = load_for_job(snakemake.input.model, snakemake.config["device"], snakemake.params.dtype,
                     snakemake.config["threads"] or snakemake.threads)
table = evaluate_model_accuracy(handle, read_table(snakemake.input.eval),
                                model_name=snakemake.wildcards.model, batch_tokens=snakemake.config["batch_tokens"])
write_parquet(table, snakemake.output[0])
