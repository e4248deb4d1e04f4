import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import logging

from actbridge.config import model_kind
from actbridge.io import atomic_directory
from actbridge.logs import log_to_file
from actbridge.micro import build_micro_model, micro_recipe
from actbridge.models import configure_threads, describe_named_model, write_model_record

log_to_file(snakemake.log[0])
configure_threads(snakemake.params.runtime["threads"] or snakemake.threads)
name, spec = snakemake.wildcards.model, snakemake.params.spec
if model_kind(spec) == "micro":
    recipe = micro_recipe(spec["micro"], snakemake.params.lm_train, snakemake.params.tokenizer)
    record = build_micro_model(snakemake.output[0], recipe, snakemake.input.tokenizer,
                               snakemake.input.lm_train, snakemake.params.shipped)
else:
    record = describe_named_model(spec, key=f"models.{name}")
    with atomic_directory(snakemake.output[0]) as tmp:
        write_model_record(tmp, record)
logging.info("model %s ready: %s", name, record.get("origin", record["kind"]))
