"""The shared `.test` run damaged (a lost output, a corrupt shard or table, shipped weights) or narrowed (the
figures from subsets of its tables): each test on its own copy of it or reading it only. A module of its own
so that, once the shared run is built, these run on another xdist worker beside `test_workflow`'s."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from actbridge.report import FIGURES
from tests.pipeline import (ACROSS_SEEDS, CAUSAL, DOWNSTREAM_OF_BRIDGES, KV_ON_EVAL, TEST_CONFIG, copy_finished,
                            figures_reading, planned_jobs, snakemake, totalled)

pytestmark = [pytest.mark.workflow]


@pytest.fixture()
def own_copy(test_run, tmp_path) -> Path:
    """The suite's `.test` run copied for one test that damages it."""
    return copy_finished(test_run, tmp_path / "actbridge")


def test_shipped_weights_are_reused_by_the_rule(own_copy):
    """Ship the trained models under the relative default location, then rebuild them from there."""
    before = {}
    for name in ("sender", "receiver"):
        before[name] = json.loads((own_copy / "results" / "models" / name / "model.json").read_text())
        subprocess.run([sys.executable, "-m", "actbridge", "ship", f"results/models/{name}", "resources/models"],
                       cwd=own_copy, check=True, capture_output=True)
    config = yaml.safe_load((own_copy / TEST_CONFIG).read_text())
    config["models"]["shipped_weights"] = "resources/models"
    (own_copy / "shipped.yaml").write_text(yaml.safe_dump(config))
    output = snakemake(own_copy, "results/models/sender", "results/models/receiver", "--configfile", "shipped.yaml",
                       "--cores", "2")
    assert re.findall(r"^(?:rule|checkpoint|localcheckpoint) (\w+):$", output, re.MULTILINE) == ["model", "model"]
    for name in ("sender", "receiver"):
        record = json.loads((own_copy / "results" / "models" / name / "model.json").read_text())
        assert record["origin"].startswith("shipped:")
        assert record["weights_sha256"] == before[name]["weights_sha256"]
        assert "using shipped weights" in (own_copy / "logs" / "models" / f"{name}.log").read_text()


def test_a_lost_output_is_rebuilt_with_its_dependents_only(own_copy):
    shutil.rmtree(own_copy / "results" / "models" / "receiver")
    jobs = planned_jobs(snakemake(own_copy, "-n", "--configfile", TEST_CONFIG))
    assert jobs == totalled({"model": 1, "dataset_stats": 1, "model_accuracy": 1, "accuracy_summary": 1,
                             "activations": 3, "bridge": 14, "bridge_metrics": 1, **DOWNSTREAM_OF_BRIDGES,
                             "kv_map": 1, **KV_ON_EVAL, **figures_reading("models/accuracy.parquet", CAUSAL[1]),
                             "receiver_causal": 1, "all": 1})


def test_a_corrupt_shard_is_named_and_rebuilt(own_copy):
    """A shard altered after its job finished: the reader names it and moves it aside; the next plain run rebuilds
    it, and the bridge metrics come out byte-identical."""
    activations = own_copy / "results" / "activations" / "sender" / "bridge_val"
    shard = activations / "part-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    metrics = own_copy / "results" / "bridges" / "metrics.parquet"
    before = metrics.read_bytes()
    # nothing is out of date (the shard's job finished long before): run one of its readers, as a user would
    failed = snakemake(own_copy, "results/bridges/s2-r3/ridge/seed0", "--force", "--configfile", TEST_CONFIG,
                       "--cores", "1", check=False)
    assert "Error" in failed
    log = "".join(p.read_text() for p in (own_copy / "logs" / "bridges").rglob("seed*.log"))
    assert "bridge_val has ['part-00000.parquet'] that do not match the sha256" in log
    assert "run snakemake again" in log
    assert (activations.parent / "bridge_val.corrupt").is_dir() and not activations.exists()
    rebuilt = snakemake(own_copy, "--configfile", TEST_CONFIG, "--cores", "2")
    assert "rule activations" in rebuilt
    assert metrics.read_bytes() == before


def test_a_corrupt_injection_file_is_named_and_rebuilt(own_copy):
    """A per-example table damaged after its job finished: statistics name it and move it aside; a rerun rebuilds."""
    path = own_copy / "results" / "injection" / "s2-r3" / "ridge" / "seed1.parquet"
    summary = own_copy / "results" / "stats" / "across_seeds.parquet"
    before = summary.read_bytes()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    failed = snakemake(own_copy, summary.relative_to(own_copy).as_posix(), "--configfile", TEST_CONFIG, "--cores",
                       "1", check=False)
    assert "Error" in failed
    log = (own_copy / "logs" / "stats" / "s2-r3" / "ridge.log").read_text()
    assert "seed1.parquet does not match the sha256 in seed1.parquet.sha256" in log and "run snakemake again" in log
    assert path.with_name("seed1.parquet.corrupt").is_file() and not path.exists()
    rebuilt = snakemake(own_copy, "--configfile", TEST_CONFIG, "--cores", "2")
    assert "rule injection" in rebuilt
    assert summary.read_bytes() == before


def _subset_config(config: dict, *, conditions: list[str] | None = None, methods: list[str] | None = None,
                   kv: bool | None = None) -> dict:
    """The `.test` config narrowed to the items a subset of its tables holds, validated as a user's would be."""
    from actbridge.catalog import validate_config

    changed = json.loads(json.dumps(config))
    if conditions is not None:
        changed["injection"]["conditions"] = conditions
    if methods is not None:
        changed["injection"]["methods"] = methods
    if kv is not None:
        changed.setdefault("kv", {})["enabled"] = kv
    return validate_config(changed)


@pytest.mark.parametrize("subset", ["no add_rescaled", "none replace self_patch", "no upper bound", "one method",
                                    "residual only", "KV only", "nothing injected"])
def test_every_figure_draws_from_any_subset_of_conditions_methods_and_channels(test_run, subset, tmp_path):
    """Any valid config builds every figure and the verdict: the figures and the verdict drawn from the shared
    run's tables narrowed as a config asking for fewer items would narrow them (a config whose conditions are
    `[none, replace, self_patch]` once failed `figure_relay` on its missing α)."""
    import matplotlib

    matplotlib.use("Agg")
    from actbridge.catalog import figure_styles
    from actbridge.kv.conditions import upper_bounds
    from actbridge.report import plots
    from actbridge.stats.verdict import VerdictSettings, verdict_markdown, verdict_table

    config = yaml.safe_load((test_run / TEST_CONFIG).read_text())
    results = test_run / "results"
    across = pq.read_table(results / ACROSS_SEEDS)
    residual_conditions = list(config["injection"]["conditions"])
    kv_conditions = sorted(set(across.filter(pc.equal(across["role"], plots.KV_ROLE))["condition"].to_pylist()))
    assert kv_conditions, "the `.test` run has KV rows: the subsets below need both channels"
    keep, narrowed = {
        "no add_rescaled": ({c for c in residual_conditions if c != "add_rescaled"} | set(kv_conditions),
                            {"conditions": [c for c in residual_conditions if c != "add_rescaled"]}),
        "none replace self_patch": ({"none", "replace", "self_patch"} | set(kv_conditions),
                                    {"conditions": ["none", "replace", "self_patch"]}),
        "no upper bound": (set(residual_conditions) - {"self_patch"} | set(kv_conditions) - set(upper_bounds()),
                           {"conditions": [c for c in residual_conditions if c != "self_patch"]}),
        "one method": (set(residual_conditions) | set(kv_conditions), {"methods": config["injection"]["methods"][:1]}),
        "residual only": (set(residual_conditions), {"kv": False}),
        "KV only": (set(kv_conditions) | {"none"}, {"conditions": ["none"]}),
        "nothing injected": ({"none"}, {"conditions": ["none"], "kv": False}),
    }[subset]
    subset_config = _subset_config(config, **narrowed)
    methods = set(subset_config["injection"]["methods"])
    rows = [r for r in across.to_pylist() if r["condition"] in keep and r["reference"] in keep
            and (r["role"] == plots.KV_ROLE or r["method"] in methods)
            and (subset_config["kv"]["enabled"] or r["role"] != plots.KV_ROLE)]
    narrowed_table = pa.Table.from_pylist(rows, schema=across.schema)
    styles = figure_styles(subset_config)
    for name, spec in FIGURES.items():
        if set(spec.inputs.values()) != {ACROSS_SEEDS}:
            continue
        figure = getattr(plots, spec.builder)(across_seeds=narrowed_table, **spec.settings(subset_config, styles))
        plots.save_figure(figure, tmp_path / f"{name}.pdf", tmp_path / f"{name}.png")
    settings = VerdictSettings.from_config(subset_config["stats"])
    verdict = verdict_table(narrowed_table, pq.read_table(results / CAUSAL[0]), pq.read_table(results / CAUSAL[1]),
                            settings=settings, upper_bounds=frozenset({"self_patch", *upper_bounds()}))
    assert verdict_markdown(verdict, settings)
    plots.save_figure(plots.verdict_figure(verdict), tmp_path / "verdict.pdf", tmp_path / "verdict.png")
    drawn = [r["condition"] for r in verdict.to_pylist()]
    assert set(drawn) <= keep - {"none"}
