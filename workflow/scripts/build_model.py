import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import logging
from pathlib import Path

from actbridge.config import model_kind
from actbridge.integrity import start_job
from actbridge.models.conversion import build_named_model
from actbridge.models.device import configure_threads, resolve_device
from actbridge.models.micro import build_micro_model, micro_recipe

start_job(snakemake)
# device and threads change where and how fast a job runs, not what it means: read them from the
# config, not from params, so that switching them never invalidates a trained model
configure_threads(snakemake.config["threads"] or snakemake.threads)
name, spec = snakemake.wildcards.model, snakemake.params.spec
if model_kind(spec) == "micro":
    shipped = snakemake.params.shipped
    if shipped is not None and not Path(shipped).is_absolute():
        shipped = Path(snakemake.scriptdir).resolve().parents[1] / shipped
    recipe = micro_recipe(spec["micro"], snakemake.params.lm_train, snakemake.params.tokenizer)
    record = build_micro_model(snakemake.output[0], recipe, tokenizer_dir=snakemake.input.tokenizer,
                               lm_train_path=snakemake.input.lm_train, shipped_root=shipped,
                               device=resolve_device(snakemake.config["device"]))
else:
    record = build_named_model(spec, key=f"models.{name}", out_dir=snakemake.output[0])
logging.info("model %s ready: %s", name, record.get("origin", record["kind"]))
