"""Planted, through the real workflow: a model bridged to itself.

Sender and receiver are the same checkpoint (the shipped default receiver, named by ``{path}``), so
in shared and relay mode the state a bridge must deliver is the state it reads. With one fit per
context mode the ridge bridge must be the identity there: normalized cosine 1, replacing the
receiver's state with its own bridged state changes no answer, and in relay mode (the receiver reads
the question alone) the bridged state recovers all that self-patching from the full prompt recovers.
A fit pooled with the asymmetric rows fails all three (docs/findings.md, "One bridge per context mode").
"""

from __future__ import annotations


import pyarrow.parquet as pq
import pytest
import yaml

from tests.pipeline import ROOT, copy_workflow, snakemake

pytestmark = pytest.mark.workflow

SHIPPED_RECEIVER = ROOT / "resources" / "models" / "4677864331655e2d"
PAIRS = ("s3-r3", "s6-r6")  # layer 0 at the last token is one fixed embedding: nothing to translate


@pytest.fixture(scope="module")
def identity_run(tmp_path_factory):
    if not (SHIPPED_RECEIVER / "model.safetensors").is_file():
        pytest.fail(f"the shipped default receiver is missing: {SHIPPED_RECEIVER}")
    workdir = tmp_path_factory.mktemp("identity_pair")
    copy_workflow(workdir)
    model = {"path": str(SHIPPED_RECEIVER)}
    config = {
        "seed": 0, "device": "cpu", "dtype": "float32", "threads": 1,
        # the data the shipped receiver was trained on (seed 0, compact template, 3 distractors), fewer worlds
        "data": {"sizes": {"lm_train": 10, "bridge_train": 600, "bridge_val": 150, "eval": 300}},
        "models": {"shipped_weights": None, "sender": model, "receiver": model},
        "activations": {"layers": [3, 6], "roles": ["last"]},
        "bridge": {"pairs": [[3, 3], [6, 6]], "seeds": 1, "methods": ["ridge"]},
        "injection": {"methods": ["ridge"], "roles": ["last"], "alphas": [1.0]},
        "stats": {"resamples": 1000, "hierarchical_resamples": 200},
    }
    (workdir / "identity.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir, "--configfile", "identity.yaml", "--cores", "2", "results/stats/across_seeds.parquet",
              "results/bridges/metrics.parquet")
    return workdir / "results"


def accuracy_deltas(results, mode: str) -> list[dict]:
    """Δ exact match against the receiver alone, per pair x condition x α, in one context mode."""
    rows = pq.read_table(results / "stats" / "across_seeds.parquet").to_pylist()
    return [r for r in rows if r["metric"] == "accuracy" and r["reference"] == "none" and r["mode"] == mode]


def test_the_shared_fit_of_a_model_to_itself_is_the_identity(identity_run):
    metrics = [r for r in pq.read_table(identity_run / "bridges" / "metrics.parquet").to_pylist()
               if r["predictor"] == "bridge"]
    for mode in ("shared", "relay"):
        rows = [r for r in metrics if r["mode"] == mode]
        assert sorted(r["pair"] for r in rows) == sorted(PAIRS)
        assert {r["fit"] for r in rows} == {"shared"}
        assert min(r["cos_normalized"] for r in rows) >= 0.999, [(r["pair"], r["cos_normalized"]) for r in rows]


def test_replacing_a_state_with_its_own_bridged_state_changes_no_answer(identity_run):
    shared = [r for r in accuracy_deltas(identity_run, "shared") if r["condition"] in ("replace", "replace_rescaled")]
    assert len(shared) == 2 * len(PAIRS)
    assert max(abs(r["delta"]) for r in shared) <= 0.01, [(r["pair"], r["condition"], r["delta"]) for r in shared]


def test_in_relay_mode_the_bridge_carries_what_self_patching_carries(identity_run):
    relay = accuracy_deltas(identity_run, "relay")
    bounds = {r["pair"]: r["delta"] for r in relay if r["condition"] == "self_patch"}
    assert set(bounds) == set(PAIRS)
    checked = 0
    for pair, bound in bounds.items():
        if bound < 0.10:
            continue
        for condition in ("replace", "replace_rescaled"):
            (delta,) = [r["delta"] for r in relay if r["pair"] == pair and r["condition"] == condition]
            assert delta / bound >= 0.95, (pair, condition, delta, bound)
        checked += 1
    # the shipped receiver gains ~+40 points from self-patching at layers 3 and 6: the check must not be vacuous
    assert checked >= 1, bounds
