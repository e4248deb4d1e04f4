"""Shipped micro weights are reused only for their exact recipe and tokenizer; otherwise we train."""

from __future__ import annotations

import json

import pytest

from actbridge.io import write_parquet
from actbridge.models.loading import load_model
from actbridge.models.micro import build_micro_model, micro_recipe, recipe_hash
from actbridge.models.weights import read_model_record
from actbridge.__main__ import main as cli

MICRO = {"layers": 1, "hidden": 16, "heads": 2, "steps": 4, "batch_size": 4, "warmup_steps": 1,
         "curriculum_steps": 2, "eval_every": 2, "seed": 0}


@pytest.fixture()
def inputs(tmp_path, lm_table, tokenizer):
    write_parquet(lm_table, tmp_path / "lm_train.parquet")
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    return tmp_path


def build(inputs, name, micro, shipped_root):
    recipe = micro_recipe(micro, {"seed": 3, "size": 300}, {"vocab_size": 400})
    record = build_micro_model(inputs / name, recipe, tokenizer_dir=inputs / "tokenizer",
                               lm_train_path=inputs / "lm_train.parquet", shipped_root=shipped_root, device="cpu")
    return recipe, record


def test_train_ship_reuse_and_retrain(inputs):
    shipped_root = inputs / "shipped"
    recipe, first = build(inputs, "first", MICRO, shipped_root)
    assert first["origin"] == "trained"
    assert json.loads((inputs / "first" / "recipe.json").read_text()) == recipe
    history = (inputs / "first" / "training_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in history] == [2, 4]

    cli(["ship", str(inputs / "first"), str(shipped_root)])
    assert (shipped_root / recipe_hash(recipe) / "model.safetensors").is_file()

    _, reused = build(inputs, "second", MICRO, shipped_root)
    assert reused["origin"] == f"shipped:{recipe_hash(recipe)}"
    assert reused["weights_sha256"] == first["weights_sha256"]
    assert read_model_record(inputs / "second")["origin"].startswith("shipped")
    load_model(inputs / "second", device="cpu")

    _, retrained = build(inputs, "third", {**MICRO, "steps": 6}, shipped_root)
    assert retrained["origin"] == "trained"


def test_training_is_deterministic(inputs):
    _, a = build(inputs, "a", MICRO, None)
    _, b = build(inputs, "b", MICRO, None)
    assert a["weights_sha256"] == b["weights_sha256"]
