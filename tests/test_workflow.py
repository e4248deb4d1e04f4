"""The workflow through Snakemake: the DAG, an end-to-end run of the tiny config, no-op reruns,
and a changed parameter recomputing only what it invalidates."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("workflow", "config", "profiles", "src", ".test")
TEST_CONFIG = ".test/config/config.yaml"


def snakemake(workdir: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True,
                            text=True, timeout=900)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{output[-4000:]}")
    return output


def planned_jobs(output: str) -> dict[str, int]:
    """Rule -> count from Snakemake's 'Job stats' table."""
    block = output[output.index("Job stats:"):]
    jobs = {}
    for line in block.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        jobs[match.group(1)] = int(match.group(2))
    return jobs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("actbridge")
    for name in COPIED:
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_default_dag(workdir):
    jobs = planned_jobs(snakemake(workdir, "-n"))
    assert jobs == {"dataset_split": 4, "micro_tokenizer": 1, "model": 2, "dataset_stats": 1,
                    "model_accuracy": 2, "accuracy_summary": 1, "all": 1, "total": 12}


def test_lint_is_clean(workdir):
    output = snakemake(workdir, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in output


@pytest.fixture(scope="module")
def finished_run(workdir) -> Path:
    snakemake(workdir, "--configfile", TEST_CONFIG, "--cores", "2")
    return workdir


def test_end_to_end_outputs(finished_run):
    results = finished_run / "results"
    for split in ("lm_train", "bridge_train", "bridge_val", "eval"):
        assert pq.read_metadata(results / "data" / f"{split}.parquet").num_rows > 0
    for name in ("sender", "receiver"):
        model_dir = results / "models" / name
        assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
        assert (model_dir / "training_log.jsonl").read_text().count("\n") >= 3
        assert "train {" in (finished_run / "logs" / "models" / f"{name}.log").read_text()
    accuracy = pq.read_table(results / "models" / "accuracy.parquet").to_pylist()
    assert {(r["model"], r["mode"], r["prompt"]) for r in accuracy} >= {
        ("sender", "shared", "full"), ("receiver", "asymmetric", "receiver")}
    stats = pq.read_table(results / "data" / "stats.parquet").to_pylist()
    assert {r["model"] for r in stats if r["statistic"] == "prompt_tokens"} == {"sender", "receiver"}
    assert "| eval |" in (results / "data" / "stats.md").read_text()


def test_data_files_are_byte_identical_across_runs(finished_run):
    from actbridge.dataset import DataConfig, build_split
    from actbridge.io import write_parquet

    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())
    data = DataConfig.from_config(config)
    again = finished_run / "again.parquet"
    write_parquet(build_split(data, "eval"), again)
    assert again.read_bytes() == (finished_run / "results" / "data" / "eval.parquet").read_bytes()


def test_rerun_with_nothing_changed_does_nothing(finished_run):
    output = snakemake(finished_run, "-n", "--configfile", TEST_CONFIG)
    assert "Nothing to be done" in output


def test_changing_eval_size_reruns_only_its_dependents(finished_run):
    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())
    config["data"]["sizes"]["eval"] += 10
    changed = finished_run / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(changed)))
    assert jobs == {"dataset_split": 1, "dataset_stats": 1, "model_accuracy": 2, "accuracy_summary": 1,
                    "all": 1, "total": 6}


def test_changing_the_receiver_retrains_only_the_receiver(finished_run):
    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())
    config["models"]["receiver"]["micro"]["steps"] += 5
    changed = finished_run / "changed_receiver.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(changed)))
    assert jobs == {"model": 1, "dataset_stats": 1, "model_accuracy": 1, "accuracy_summary": 1,
                    "all": 1, "total": 5}


@pytest.fixture(scope="module")
def shipped_run(finished_run) -> Path:
    """Ship the trained models under the relative default location, then rebuild from them.

    Returns the config file of that run, which later tests must keep using.
    """
    before = {}
    for name in ("sender", "receiver"):
        before[name] = json.loads((finished_run / "results" / "models" / name / "model.json").read_text())
        subprocess.run([sys.executable, "-m", "actbridge", "ship", f"results/models/{name}", "resources/models"],
                       cwd=finished_run, check=True, capture_output=True)
    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())
    config["models"]["shipped_weights"] = "resources/models"
    shipped = finished_run / "shipped.yaml"
    shipped.write_text(yaml.safe_dump(config))
    snakemake(finished_run, "--configfile", str(shipped), "--cores", "2")
    (finished_run / "before.json").write_text(json.dumps(before))
    return shipped


def test_shipped_weights_are_reused_by_the_rule(finished_run, shipped_run):
    before = json.loads((finished_run / "before.json").read_text())
    for name in ("sender", "receiver"):
        record = json.loads((finished_run / "results" / "models" / name / "model.json").read_text())
        assert record["origin"].startswith("shipped:")
        assert record["weights_sha256"] == before[name]["weights_sha256"]
        assert "using shipped weights" in (finished_run / "logs" / "models" / f"{name}.log").read_text()


def test_a_lost_output_is_rebuilt_with_its_dependents_only(finished_run, shipped_run):
    shutil.rmtree(finished_run / "results" / "models" / "receiver")
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(shipped_run)))
    assert jobs == {"model": 1, "dataset_stats": 1, "model_accuracy": 1, "accuracy_summary": 1,
                    "all": 1, "total": 5}
