"""The cost estimate (actbridge.plan): job counts agree with the DAG, sizes follow from the shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from actbridge.config import ConfigError
from actbridge.plan import PYTHIA_SHAPES, load_config, main, model_shape, stage_costs

ROOT = Path(__file__).resolve().parents[1]


def by_stage(config: dict, results: Path) -> dict:
    costs, _ = stage_costs(config, results)
    return {cost.stage: cost for cost in costs}


def test_default_config_job_counts_match_the_workflow_dag(tmp_path):
    # the same numbers as tests/test_workflow.py::test_default_dag
    costs = by_stage(load_config([]), tmp_path)
    assert {stage: costs[stage].jobs for stage in ("dataset_split", "model", "activations", "bridge", "injection",
                                                   "condition_stats", "sender_causal")} == {
        "dataset_split": 4, "model": 2, "activations": 6, "bridge": 125, "injection": 25, "condition_stats": 5,
        "sender_causal": 1}
    assert costs["model"].flops > 0 and costs["model"].tokens > 0  # micro models are trained


def test_pythia_profile_sizes_follow_from_the_published_shapes(tmp_path):
    config = load_config([ROOT / "config" / "pythia.yaml"])
    costs = by_stage(config, tmp_path)
    assert costs["model"].flops == 0  # named weights are not trained
    rows = 8000 + 2000 + 4000  # 4,000 / 1,000 / 2,000 worlds, 2 rows each (asymmetric for 2-hop, relay for 1-hop)
    assert costs["activations"].forward_passes == 2 * rows
    sender, receiver = PYTHIA_SHAPES["EleutherAI/pythia-160m"], PYTHIA_SHAPES["EleutherAI/pythia-410m"]
    float16 = 2
    expected = rows * 2 * ((sender[0] + 1) * sender[1] + (receiver[0] + 1) * receiver[1]) * float16
    assert costs["activations"].disk_bytes == expected
    assert costs["bridge"].jobs == 13 * 5 * 5 and costs["injection"].jobs == 13 * 2 * 5
    assert costs["injection"].flops > costs["activations"].flops > 0


def test_a_local_model_directory_is_read_for_its_shape(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 3, "hidden_size": 64, "vocab_size": 99}))
    shape = model_shape({"path": str(tmp_path)}, vocab_size=0)
    assert (shape.layers, shape.hidden, shape.vocab) == (3, 64, 99)
    with pytest.raises(ValueError, match="no config.json"):
        model_shape({"path": str(tmp_path / "missing")}, vocab_size=0)


def test_an_unknown_uncached_hub_model_is_an_error_not_a_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="neither cached nor a known Pythia id"):
        model_shape({"hf_id": "someone/unknown-model", "revision": "main"}, vocab_size=0)


def test_a_bad_config_is_named_before_any_estimate(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"bridge": {"seeds": 0}}))
    with pytest.raises(ConfigError, match="bridge.seeds"):
        main(["--configfile", str(bad), "--results", str(tmp_path)])
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"bridge": {"seeds": 2}}))
    assert main(["--configfile", str(good), "--results", str(tmp_path)]) == 0
    assert "| bridge | 50 |" in capsys.readouterr().out


def dry_run_jobs(tmp_path: Path, *configs: str, records: dict | None = None) -> dict[str, int]:
    """Snakemake's job counts for ``configs`` over the default, in a copy of the workflow; ``records`` writes
    named models' ``model.json`` (their shape) first, as the model checkpoint would."""
    from tests.pipeline import copy_workflow, planned_jobs, snakemake

    copy_workflow(tmp_path)
    for model, (layers, hidden, vocab) in (records or {}).items():
        directory = tmp_path / "results" / "models" / model
        directory.mkdir(parents=True)
        (directory / "model.json").write_text(json.dumps(
            {"kind": "hf_id", "shape": {"num_layers": layers, "hidden_size": hidden, "vocab_size": vocab}}))
    args = [arg for config in configs for arg in ("--configfile", config)]
    return planned_jobs(snakemake(tmp_path, "-n", *args))


def plan_jobs(config: dict, results: Path) -> dict[str, int]:
    from actbridge.plan import job_counts

    costs = by_stage(config, results)
    counts = job_counts(config, pairs=costs["bridge"].jobs // (len(config["bridge"]["methods"])
                                                               * config["bridge"]["seeds"]))
    assert sum(cost.jobs for cost in costs.values()) == sum(counts.values())  # every job priced in some stage
    return {**counts, "total": sum(counts.values())}


@pytest.mark.workflow
@pytest.mark.parametrize("overlay", [None, ".test/config/config.yaml"])
def test_plan_job_counts_equal_the_dry_run(tmp_path, overlay):
    config = load_config([ROOT / overlay] if overlay else [])
    assert plan_jobs(config, tmp_path / "none") == dry_run_jobs(tmp_path / "run", *([overlay] if overlay else []))


@pytest.mark.workflow
def test_plan_job_counts_equal_the_dry_run_for_pythia(tmp_path):
    """Named models: past the model checkpoint (its records written as it writes them), the whole DAG."""
    config = load_config([ROOT / "config" / "pythia.yaml"])
    records = {"sender": PYTHIA_SHAPES["EleutherAI/pythia-160m"], "receiver": PYTHIA_SHAPES["EleutherAI/pythia-410m"]}
    jobs = dry_run_jobs(tmp_path / "run", "config/pythia.yaml", records=records)
    expected = plan_jobs(config, tmp_path / "none")
    # the model checkpoint is done there (its records stand for it), so only the models' own jobs differ
    expected = {rule: count for rule, count in expected.items() if rule != "model"}
    expected["total"] -= 2
    assert jobs == expected
