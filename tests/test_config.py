"""Every schema rule: a bad value or unknown key is rejected with a message naming the key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from actbridge.catalog import validate_config
from actbridge.config import ConfigError, merge_config, routes_over_base

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def mutate(path: str, value, delete: bool = False) -> dict:
    config = copy.deepcopy(DEFAULT)
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    if delete:
        del node[last]
    else:
        node[last] = value
    return config


def test_default_and_test_configs_are_valid():
    validated = validate_config(DEFAULT)
    assert validated["models"]["sender"]["micro"]["batch_size"] == 32  # default filled in
    validate_config(yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text()))
    validate_config(yaml.safe_load((ROOT / "config" / "pythia.yaml").read_text()))


def test_an_overlay_that_names_a_model_another_way_replaces_its_spec():
    """`--configfile config/pythia.yaml` over the default: hub ids replace the micro specs whole."""
    pythia = yaml.safe_load((ROOT / "config" / "pythia.yaml").read_text())
    merged = validate_config(merge_config(DEFAULT, pythia))
    assert merged["models"]["sender"] == {"hf_id": "EleutherAI/pythia-160m", "revision": "main"}
    local = validate_config(merge_config(DEFAULT, {"models": {"receiver": {"path": "/weights/receiver"}}}))
    assert local["models"]["receiver"] == {"path": "/weights/receiver"}
    assert "micro" in local["models"]["sender"]  # untouched
    # an overlay on the same route still merges key by key
    tweaked = validate_config(merge_config(DEFAULT, {"models": {"sender": {"micro": {"steps": 10}}}}))
    assert tweaked["models"]["sender"]["micro"]["steps"] == 10
    assert tweaked["models"]["sender"]["micro"]["layers"] == DEFAULT["models"]["sender"]["micro"]["layers"]
    # switching back from a hub id to a micro spec drops the hub keys
    back = merge_config(merge_config(DEFAULT, pythia), {"models": {"sender": DEFAULT["models"]["sender"]}})
    assert set(back["models"]["sender"]) == {"micro"}



def snakemake_merge(base: dict, overlay: dict) -> dict:
    """Snakemake's own merge of a --configfile over the configfile: key by key, no routes."""
    merged = copy.deepcopy(base)

    def update(target, source):
        for key, value in source.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                update(target[key], value)
            else:
                target[key] = copy.deepcopy(value)

    update(merged, overlay)
    return merged


@pytest.mark.parametrize("overlay", [
    "pythia", {"models": {"receiver": {"path": "/weights/receiver"}}}, {"models": {"sender": {"micro": {"steps": 10}}}},
    {"models": {"sender": {"hf_id": "org/model"}, "receiver": {"path": "/w", "gguf_file": "m.gguf"}}},
])
def test_the_workflow_recovers_the_routes_from_the_merge_and_the_base_alone(overlay):
    """What the workflow sees (Snakemake's merged config, and the base file) gives the same config as merging
    with the overlay in hand: no Snakemake internals are needed to know which way a model is named."""
    if overlay == "pythia":
        overlay = yaml.safe_load((ROOT / "config" / "pythia.yaml").read_text())
    assert routes_over_base(snakemake_merge(DEFAULT, overlay), DEFAULT) == merge_config(DEFAULT, overlay)


def test_a_spec_naming_a_model_two_new_ways_is_still_an_error():
    merged = snakemake_merge(DEFAULT, {"models": {"sender": {"micro": {"layers": 9}, "hf_id": "org/model"}}})
    with pytest.raises(ConfigError, match="models.sender"):
        validate_config(routes_over_base(merged, DEFAULT))


BAD = [
    ("seed", -1, "seed"),
    ("seed", "zero", "seed"),
    ("device", "tpu", "device"),
    ("dtype", "float16", "dtype"),
    ("threads", -2, "threads"),
    ("colour", 1, "colour"),
    ("data.hops", [], "data.hops"),
    ("data.hops", [0], "data.hops[0]"),
    ("data.hops", ["two"], "data.hops[0]"),
    ("data.hops", [2, 2], "data.hops"),
    ("data.distractors", -1, "data.distractors"),
    ("data.distractors", 12, "data.distractors"),
    ("data.context_modes", ["both"], "data.context_modes[0]"),
    ("data.context_modes", [], "data.context_modes"),
    ("data.train_questions", 0, "data.train_questions"),
    ("data.template", "yaml", "data.template"),
    ("data.sizes.eval", 0, "data.sizes.eval"),
    ("data.sizes.test", 10, "data.sizes.test"),
    ("data.extra", 1, "data.extra"),
    ("models.tokenizer.vocab_size", 10, "models.tokenizer.vocab_size"),
    ("models.sender", {"micro": {"layers": 2}}, "models.sender.micro"),
    ("models.sender", {"micro": {"layers": 0, "hidden": 64, "heads": 2, "steps": 1}}, "models.sender.micro.layers"),
    ("models.sender", {"micro": {"layers": 2, "hidden": 64, "heads": 2, "steps": 1, "lr": 1}},
     "models.sender.micro.lr"),
    ("models.sender", {"hf_id": "EleutherAI/pythia-160m", "path": "/x"}, "models.sender"),
    ("models.sender", {"hf_id": "not a valid id!"}, "models.sender.hf_id"),
    ("models.receiver", {"path": "/x", "gguf_file": "model.bin"}, "models.receiver.gguf_file"),
    ("models.receiver", {"weights": "/x"}, "models.receiver"),
    ("models.receiver", "pythia", "models.receiver"),
    ("bridge", {"fit_modes": ["relayed"]}, "bridge.fit_modes[0]"),
    ("bridge", {"trained": {"patience": 0}}, "bridge.trained.patience"),
    ("bridge", {"trained": {"epochs": 2, "early_stop": True}}, "bridge.trained.early_stop"),
    ("injection", {"alphas": []}, "injection.alphas"),
    ("injection", {"alphas": [0.0]}, "injection.alphas[0]"),
    ("injection", {"conditions": ["none", "amplify"]}, "injection.conditions[1]"),
    ("injection", {"roles": ["first"]}, "injection.roles[0]"),
    ("injection", {"batch": 4}, "injection.batch"),
    ("stats", {"confidence": 1.5}, "stats.confidence"),
    ("stats", {"resamples": 10}, "stats.resamples"),
    ("figures", {"method": "lstsq"}, "figures.method"),
]


@pytest.mark.parametrize("path,value,key", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_value_names_its_key(path, value, key):
    with pytest.raises(ConfigError) as raised:
        validate_config(mutate(path, value))
    assert f"config key {key}" in str(raised.value)


@pytest.mark.parametrize("path", ["seed", "data", "models.sender", "data.sizes.lm_train", "data.hops"])
def test_missing_required_key_is_named(path):
    with pytest.raises(ConfigError) as raised:
        validate_config(mutate(path, None, delete=True))
    assert path.split(".")[-1] in str(raised.value)


def test_heads_must_divide_hidden():
    config = mutate("models.receiver", {"micro": {"layers": 2, "hidden": 64, "heads": 3, "steps": 1}})
    with pytest.raises(ConfigError, match="models.receiver.micro.heads"):
        validate_config(config)


@pytest.mark.parametrize("hop_layer, problem", [(2, "must be below layers=2"), (-1, "hop_layer")])
def test_hop_layer_must_be_inside_the_model(hop_layer, problem):
    config = mutate("models.sender", {"micro": {"layers": 2, "hidden": 64, "heads": 2, "steps": 1,
                                                "hop_layer": hop_layer}})
    with pytest.raises(ConfigError, match="models.sender.micro.hop_layer") as raised:
        validate_config(config)
    assert problem in str(raised.value)


def test_hop_supervision_keys_are_not_filled_in_so_old_recipes_keep_their_hash():
    micro = validate_config(mutate("models.sender", {"micro": {"layers": 2, "hidden": 64, "heads": 2,
                                                                "steps": 1}}))["models"]["sender"]["micro"]
    assert "hop_layer" not in micro and "hop_weight" not in micro


@pytest.mark.parametrize("spec", [{"hf_id": "EleutherAI/pythia-160m", "revision": "step143000"},
                                  {"path": "/models/pythia"}, {"path": "/models", "gguf_file": "p.gguf"}])
def test_named_model_forms_are_accepted(spec):
    validate_config(mutate("models.sender", spec))


@pytest.mark.workflow
def test_snakemake_stops_before_any_job_naming_the_key(tmp_path):
    bad = mutate("data.context_modes", ["shared", "sideways"])
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump(bad))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(config_file)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key data.context_modes[1]" in output
    assert "Traceback" not in output
    assert "Building DAG" not in output


@pytest.mark.parametrize("section,value,message", [
    ("injection", {"conditions": ["add", "replace"]}, "config key injection.conditions: must include 'none'"),
    ("injection", {"roles": ["last", "subject"]}, "config key injection.roles: ['subject'] not in activations.roles"),
    ("injection", {"methods": ["ridge", "mlp"]}, None),
    ("figures", {"method": "sgd"}, "config key figures.method: 'sgd' is not injected"),
])
def test_injection_keys_must_agree_with_the_rest_of_the_config(section, value, message):
    config = mutate(section, value)
    if message is None:
        assert validate_config(config)["injection"]["methods"] == ["ridge", "mlp"]
        config["bridge"] = {"methods": ["ridge"]}
        message = "config key injection.methods: ['mlp'] not in bridge.methods"
    with pytest.raises(ConfigError) as raised:
        validate_config(config)
    assert message in str(raised.value)
