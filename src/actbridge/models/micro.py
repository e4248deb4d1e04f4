"""Build ``results/models/{name}/`` for a micro model: reuse shipped weights or train.

Shipped weights are a cache keyed by the exact recipe (micro config, the data
settings that produced ``lm_train``, tokenizer settings, recipe version): a
config that matches reuses them in seconds, any other config trains. The
shipped tokenizer must also equal the one trained here, token for token.

A training that is killed resumes from its last logged step (:func:`checkpoint_path`); the model directory
appears only once training has finished, so half-trained weights never stand under a recipe's name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from actbridge.io import atomic_directory, write_json
from actbridge.models.micro_training import MicroModelConfig, heldout_evaluator, split_heldout, train_micro_model
from actbridge.models.record import MODEL_RECORD
from actbridge.models.weights import weights_fingerprint, write_model_record

log = logging.getLogger(__name__)
HELDOUT_ROWS = 500
RECIPE_FILE = "recipe.json"
# Bump when the training code changes in a way that changes the weights it produces.
RECIPE_VERSION = 1
# Beside the models, not inside an output: Snakemake removes a failed job's output, and the next run resumes here.
CHECKPOINTS = ".checkpoints"


def checkpoint_path(out_dir: str | Path, recipe: dict) -> Path:
    """Where training ``out_dir`` by ``recipe`` keeps its state between steps: one file per model and recipe,
    so a changed recipe never resumes another's training."""
    out_dir = Path(out_dir)
    return out_dir.parent / CHECKPOINTS / f"{out_dir.name}-{recipe_hash(recipe)}.pt"


def micro_recipe(micro: dict, lm_train_params: dict, tokenizer_params: dict) -> dict:
    return {"recipe_version": RECIPE_VERSION, "micro": micro, "lm_train": lm_train_params,
            "tokenizer": tokenizer_params}


def build_micro_model(out_dir: str | Path, recipe: dict, *, tokenizer_dir: str | Path,
                      lm_train_path: str | Path, shipped_root: str | Path | None,
                      device: torch.device | str) -> dict:
    """Materialize a micro model directory atomically; returns its ``model.json`` record."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    shipped = find_shipped_model(shipped_root, recipe)
    checkpoint = checkpoint_path(out_dir, recipe)
    with atomic_directory(out_dir) as tmp:
        if shipped is not None and same_vocabulary(
                tokenizer, AutoTokenizer.from_pretrained(shipped, local_files_only=True)):
            log.info("using shipped weights %s (trained by this exact recipe); "
                     "set models.shipped_weights: null to retrain", shipped)
            copy_model_files(shipped, tmp)
            origin = f"shipped:{shipped.name}"
        else:
            if shipped is not None:
                log.warning("shipped weights %s match the recipe but not this tokenizer; retraining", shipped)
            else:
                log.info("no shipped weights for this recipe under %s; training", shipped_root)
            micro = MicroModelConfig.from_dict(recipe["micro"])
            lm_train = pq.read_table(lm_train_path)
            train_rows, heldout = split_heldout(lm_train, HELDOUT_ROWS)
            model, history = train_micro_model(
                micro, tokenizer, train_rows, device=device, evaluate=heldout_evaluator(heldout, tokenizer),
                progress=lambda record: log.info("train %s", json.dumps(record)), checkpoint=checkpoint)
            model = model.cpu()
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / "training_log.jsonl").write_text("".join(json.dumps(record) + "\n" for record in history))
            write_json(recipe, tmp / RECIPE_FILE)
            origin = "trained"
        record = {"kind": "micro", "origin": origin, "recipe": recipe,
                  "weights_sha256": weights_fingerprint(tmp)}
        write_model_record(tmp, record)
    checkpoint.unlink(missing_ok=True)
    return record


def recipe_hash(recipe: dict) -> str:
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def find_shipped_model(shipped_root: str | Path | None, recipe: dict) -> Path | None:
    """The shipped directory trained by exactly ``recipe``, if there is one."""
    if shipped_root is None:
        return None
    candidate = Path(shipped_root) / recipe_hash(recipe)
    if not (candidate / RECIPE_FILE).is_file():
        return None
    if json.loads((candidate / RECIPE_FILE).read_text()) != recipe:
        return None
    return candidate


def same_vocabulary(first: PreTrainedTokenizerBase, second: PreTrainedTokenizerBase) -> bool:
    return first.get_vocab() == second.get_vocab()


def copy_model_files(source: Path, destination: Path) -> None:
    for item in source.iterdir():
        if item.is_file() and item.name != MODEL_RECORD:
            shutil.copy2(item, destination / item.name)


def ship_model(model_dir: str | Path, shipped_root: str | Path) -> Path:
    """Copy a trained micro model under ``shipped_root/<recipe hash>/`` for later runs to reuse."""
    model_dir = Path(model_dir)
    recipe = json.loads((model_dir / RECIPE_FILE).read_text())
    target = Path(shipped_root) / recipe_hash(recipe)
    target.mkdir(parents=True, exist_ok=True)
    copy_model_files(model_dir, target)
    return target
