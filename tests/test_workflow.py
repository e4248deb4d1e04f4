"""The workflow through Snakemake: the DAG, an end-to-end run of the tiny config, no-op reruns,
and a changed parameter recomputing only what it invalidates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from actbridge.report import FIGURES
from tests.pipeline import (ACROSS_SEEDS, CAUSAL, DOWNSTREAM_OF_BRIDGES, KV_ON_EVAL, METRICS, TEST_CONFIG, VERDICT,
                            copy_finished, copy_workflow, figures_reading, planned_jobs, planted_code_edit,
                            snakemake, totalled)

pytestmark = [pytest.mark.workflow]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("actbridge"))


def test_default_dag(workdir):
    jobs = planned_jobs(snakemake(workdir, "-n"))
    # 5 layer pairs (sender 0..4 at relative depth in the 6-layer receiver) x 5 methods x 5 seeds
    # injection: the same 5 pairs x the ridge bridge x 5 seeds; statistics per pair x method, then one summary
    assert jobs == totalled({"dataset_split": 4, "micro_tokenizer": 1, "model": 2, "dataset_stats": 1,
                             "model_accuracy": 2, "accuracy_summary": 1, "activations": 6, "bridge": 125,
                             "bridge_metrics": 1, "injection": 25, "condition_stats": 5, "stats_summary": 1,
                             "sender_causal": 1, "receiver_causal": 1, "verdict": 1, "all": 1,
                             **{f"figure_{name}": 1 for name in FIGURES}})
    assert jobs["total"] == 178 + len(FIGURES)


def test_one_figure_builds_only_its_ancestors(workdir):
    jobs = planned_jobs(snakemake(workdir, "-n", "results/figures/injection_sweep.pdf"))
    # the ridge bridges only (the injected method), no accuracy tables, bridge metrics or other figures
    assert jobs == {"dataset_split": 4, "micro_tokenizer": 1, "model": 2, "activations": 6, "bridge": 25,
                    "injection": 25, "condition_stats": 5, "stats_summary": 1, "figure_injection_sweep": 1,
                    "total": 70}


def test_injection_settings_that_contradict_the_config_stop_before_any_job(workdir):
    config = yaml.safe_load((workdir / TEST_CONFIG).read_text())
    config["injection"]["methods"] = ["procrustes"]
    config["bridge"]["methods"] = ["ridge", "mlp"]
    bad = workdir / "bad_injection.yaml"
    bad.write_text(yaml.safe_dump(config))
    output = snakemake(workdir, "-n", "--configfile", str(bad), check=False)
    assert "config key injection.methods" in output and "bridge.methods" in output
    assert "Traceback" not in output


def test_bridge_pairs_outside_the_extracted_layers_stop_before_any_job(workdir):
    config = yaml.safe_load((workdir / TEST_CONFIG).read_text())
    config["bridge"]["pairs"] = [[2, 9]]
    bad = workdir / "bad_pairs.yaml"
    bad.write_text(yaml.safe_dump(config))
    output = snakemake(workdir, "-n", "--configfile", str(bad), check=False)
    assert "config key bridge.pairs: pairs [(2, 9)] name layers the models do not have (sender 0..2, receiver 0..3" \
        in output
    assert "Traceback" not in output
    config["activations"]["layers"] = {"sender": [0, 1], "receiver": "all"}  # layer 2 exists but is not extracted
    config["bridge"]["pairs"] = [[2, 3]]
    bad.write_text(yaml.safe_dump(config))
    output = snakemake(workdir, "-n", "--configfile", str(bad), check=False)
    assert "config key bridge.pairs" in output and "add them to activations.layers" in output


def test_the_pythia_profile_plans_from_the_documented_command(workdir):
    """`snakemake --configfile config/pythia.yaml`: the hub ids replace the default micro specs, and
    the plan waits on the model checkpoint (layer counts come from the weights) instead of failing."""
    jobs = planned_jobs(snakemake(workdir, "-n", "--configfile", "config/pythia.yaml"))
    assert jobs["model"] >= 1 and "micro_tokenizer" not in jobs


def test_lint_is_clean(workdir):
    output = snakemake(workdir, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in output


@pytest.fixture(scope="module")
def finished_run(test_run, tmp_path_factory) -> Path:
    """The suite's `.test` run, copied: these tests edit code, plant faults and rebuild."""
    return copy_finished(test_run, tmp_path_factory.mktemp("finished") / "actbridge")


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


def test_end_to_end_activations_and_bridges(finished_run):
    from actbridge.activations.store import ActivationStore

    results = finished_run / "results"
    for model, layers in (("sender", 3), ("receiver", 4)):
        for split in ("bridge_train", "bridge_val", "eval"):
            store = ActivationStore(results / "activations" / model / split)
            assert store.layers == tuple(range(layers)) and store.roles == ("last", "bridge")
            assert store.manifest["model"]["kind"] == "micro" and store.manifest["model"]["device"] == "cpu"
    metrics = pq.read_table(results / "bridges" / "metrics.parquet").to_pylist()
    # 1 pair x 7 methods x 2 seeds x 3 predictors (widths differ: no identity) x (role, mode): last in all
    # three modes, the bridge mention in shared and asymmetric (a relay prompt never names a bridge entity)
    assert len(metrics) == 1 * 7 * 2 * 3 * 5
    assert {(r["role"], r["mode"]) for r in metrics} == {("last", "shared"), ("last", "asymmetric"), ("last", "relay"),
                                                         ("bridge", "shared"), ("bridge", "asymmetric")}
    assert {r["method"] for r in metrics} == {"ridge", "sgd", "procrustes", "lowrank", "mlp", "trained", "cca"}
    # one fit per context mode; offline maps serve relay with the shared fit, the trained bridge trains its own
    for method, fits in (("ridge", {"shared": "shared", "relay": "shared", "asymmetric": "asymmetric"}),
                         ("mlp", {"shared": "shared", "relay": "shared", "asymmetric": "asymmetric"}),
                         ("trained", {"shared": "shared", "relay": "relay", "asymmetric": "asymmetric"})):
        role_dir = results / "bridges" / "s2-r3" / method / "seed1" / "last"
        assert json.loads((role_dir / "fits.json").read_text()) == fits
        for fit in set(fits.values()):
            assert (role_dir / fit / "bridge.safetensors").is_file()
            meta = json.loads((role_dir / fit / "bridge.json").read_text())
            assert meta["sender_layer"] == 2 and meta["fit_modes"] == [fit]
    trained = json.loads((results / "bridges" / "s2-r3" / "trained" / "seed0" / "bridge" / "shared" /
                          "bridge.json").read_text())
    assert trained["info"]["start"] == "ridge" and len(trained["info"]["val_loss_by_epoch"]) == 2  # start + 1 epoch
    assert "| last | shared | s2-r3 | ridge | shared | bridge | 2 |" in (results / "bridges" / "metrics.md").read_text()


def test_end_to_end_injection_statistics_and_figures(finished_run):
    results = finished_run / "results"
    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())["injection"]
    rows = pq.read_table(results / "injection" / "s2-r3" / "ridge" / "seed0.parquet").to_pylist()
    assert {r["role"] for r in rows} == {"last", "bridge"}
    assert {(r["role"], r["mode"]) for r in rows} == {("last", "shared"), ("last", "asymmetric"), ("last", "relay"),
                                                      ("bridge", "shared"), ("bridge", "asymmetric")}
    labels = {(r["condition"], r["alpha"]) for r in rows}
    assert ("self_patch", None) in labels and ("add", config["alphas"][0]) in labels
    baseline = {(r["example_id"], r["mode"], r["role"]) for r in rows if r["condition"] == "none"}
    for condition in ("add", "replace_rescaled", "shuffled"):  # every condition pairs with the baseline
        assert {(r["example_id"], r["mode"], r["role"]) for r in rows if r["condition"] == condition} == baseline
    across = pq.read_table(results / "stats" / "across_seeds.parquet").to_pylist()
    # the bridges' two seeds; the KV channel's ridge map has none (one fit)
    assert {r["n_seeds"] for r in across if not r["method"].startswith("kv_")} == {2}
    assert {r["n_seeds"] for r in across if r["method"].startswith("kv_")} == {1}
    assert {(r["condition"], r["reference"]) for r in across} >= {("add_rescaled", "add"),
                                                                   ("replace_rescaled", "replace"),
                                                                   ("self_patch", "none")}
    per_seed = pq.read_table(results / "stats" / "per_seed.parquet").to_pylist()
    assert {r["seed"] for r in per_seed} == {0, 1} and all(0 <= r["p_holm"] <= 1 for r in per_seed)
    summary = (results / "stats" / "summary.md").read_text()
    assert "## ridge · role `last` · mode `asymmetric`" in summary and "add_rescaled − add" in summary
    effects = pq.read_table(results / "causal" / "sender.parquet").to_pylist()
    assert {(r["layer"], r["role"]) for r in effects} == {(layer, role) for layer in (2,) for role in ("last", "bridge")}
    assert {r["condition"] for r in effects} == {"mean", "resample", "patch"}
    assert {r["metric"] for r in effects if r["condition"] == "patch"} == {"accuracy", "first_token", "logprob", "moved"}
    patching = pq.read_table(results / "causal" / "sender_patching_examples.parquet").to_pylist()
    assert {r["condition"] for r in patching} == {"none", "patch"} and {r["hops"] for r in patching} == {2}
    causal = (results / "causal" / "sender.md").read_text()
    assert "## role `last`: ablation" in causal and "## role `bridge`: counterfactual patching" in causal
    receiver = pq.read_table(results / "causal" / "receiver.parquet").to_pylist()
    assert {(r["layer"], r["role"]) for r in receiver} == {(3, role) for role in ("last", "bridge")}
    assert {r["condition"] for r in receiver} == {"patch", "self_patch"}
    self_patch = pq.read_table(results / "causal" / "receiver_self_patch_examples.parquet").to_pylist()
    assert {r["condition"] for r in self_patch} == {"none", "self_patch"}
    assert {(r["mode"], r["hops"], r["role"]) for r in self_patch} == {("asymmetric", 2, "last"), ("relay", 1, "last"),
                                                                       ("asymmetric", 2, "bridge")}
    assert {(r["mode"], r["condition"]) for r in receiver} == {("shared", "patch"), ("asymmetric", "self_patch"),
                                                               ("relay", "self_patch")}
    receiver_text = (results / "causal" / "receiver.md").read_text()
    assert "## role `bridge`" in receiver_text and "self-patch (relay)" in receiver_text
    verdict = pq.read_table(results / "stats" / "verdict.parquet").to_pylist()
    # per injected method (ridge, trained), the 10 conditions other than none, per role and mode, self_patch where
    # the receiver's prompt lacks facts: last token in shared, asymmetric, relay (9 + 10 + 10), the bridge mention in
    # shared and asymmetric (9 + 10; a relay prompt names no bridge entity): 2 x 48
    # and the KV channel (kv_ridge): its 4 conditions other than none in asymmetric and relay mode, role context;
    # each row on both right/wrong metrics, the headline one (stats.metric) flagged
    assert len(verdict) == 2 * (96 + 8) and {r["method"] for r in verdict} == {"ridge", "trained", "kv_ridge"}
    assert sum(r["headline"] for r in verdict) == 96 + 8
    assert {r["metric"] for r in verdict if r["headline"]} == {"accuracy"}
    assert {r["metric"] for r in verdict if not r["headline"]} == {"first_token"}
    kv_verdict = [r for r in verdict if r["method"] == "kv_ridge"]
    assert {(r["mode"], r["role"]) for r in kv_verdict} == {("asymmetric", "context"), ("relay", "context")}
    # two sites: every block of the three sent, and one
    assert all(r["n_sites"] == 2 for r in kv_verdict) and {r["pair"] for r in kv_verdict} <= {"kv-1", "kv-all"}
    assert {r["condition"] for r in verdict} >= {"subspace_swap"}
    # the kind, without its numbers: "helps: 25% of upper bound", "no effect (would detect ≥ 3.1 points)"
    assert {r["verdict"].split(":")[0].split(" (")[0] for r in verdict} <= {"helps", "harmful", "no effect",
                                                                            "inconclusive", "upper bound"}
    assert all(0 < r["detectable"] and 0 < r["level"] <= 0.05 for r in verdict)
    assert "## mode `asymmetric`" in (results / "stats" / "verdict.md").read_text()
    assert "## mode `relay`" in (results / "stats" / "verdict.md").read_text()
    for figure in FIGURES:
        assert (results / "figures" / f"{figure}.pdf").read_bytes().startswith(b"%PDF")
        assert (results / "figures" / f"{figure}.png").read_bytes().startswith(b"\x89PNG")


def test_the_report_gathers_figures_and_tables(finished_run):
    output = snakemake(finished_run, "--configfile", TEST_CONFIG, "--report", "report.html")
    assert "Report created" in output and "ERROR/" not in output  # captions are valid reStructuredText
    report = (finished_run / "report.html").read_text(errors="replace")
    for name in (*(f"{figure}.png" for figure in FIGURES), "summary.md", "verdict.md"):
        assert name in report
    assert "What this run concluded is the verdict" in report


def test_changing_the_alphas_reruns_only_injection_statistics_and_their_figures(finished_run):
    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())
    config["injection"]["alphas"] = [0.05, 0.5]
    changed = finished_run / "changed_alphas.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(changed)))
    assert jobs == totalled({"injection": 4, "condition_stats": 2, "stats_summary": 1, "verdict": 1,
                             **figures_reading(ACROSS_SEEDS, VERDICT), "all": 1})
    config["injection"]["conditions"] = ["none", "add", "replace"]
    changed.write_text(yaml.safe_dump(config))
    assert planned_jobs(snakemake(finished_run, "-n", "--configfile", str(changed))) == jobs


def test_changing_the_resamples_reruns_only_statistics(finished_run):
    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())
    config["stats"]["resamples"] += 100
    changed = finished_run / "changed_stats.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(changed)))
    assert jobs == totalled({"condition_stats": 2, "kv_stats": 2, "stats_summary": 1, "verdict": 1,
                             "sender_causal": 1, "receiver_causal": 1, **figures_reading(ACROSS_SEEDS, *CAUSAL, VERDICT),
                             "all": 1})


def test_data_files_are_byte_identical_across_runs(finished_run):
    from actbridge.data.worlds import DataConfig, build_split
    from actbridge.io import write_parquet

    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())
    data = DataConfig.from_config(config)
    again = finished_run / "again.parquet"
    write_parquet(build_split(data, "eval"), again)
    assert again.read_bytes() == (finished_run / "results" / "data" / "eval.parquet").read_bytes()


def test_rerun_with_nothing_changed_does_nothing(finished_run):
    output = snakemake(finished_run, "-n", "--configfile", TEST_CONFIG)
    assert "Nothing to be done" in output


def test_editing_prose_in_the_library_reruns_nothing_and_editing_code_reruns_its_rules(finished_run):
    module = finished_run / "src" / "actbridge" / "stats" / "verdict.py"
    original = module.read_text()
    try:
        module.write_text(original.replace('"""The verdict table:', '"""The verdict table (reworded):', 1)
                          + "\n# a comment added at the end\n")
        assert "Nothing to be done" in snakemake(finished_run, "-n", "--configfile", TEST_CONFIG)
        module.write_text(original.replace("NAN = float(\"nan\")", "NAN = float(\"nan\")  # noqa\nUNUSED = 1"))
        jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", TEST_CONFIG))
        assert jobs == {"verdict": 1, **figures_reading(VERDICT), "all": 1, "total": 3}
    finally:
        module.write_text(original)


def test_editing_the_named_model_conversion_retrains_no_micro_model(finished_run):
    """The model rule's fingerprint is its model's code path: the conversion of named models is not the micro one."""
    with planted_code_edit(finished_run, "models/conversion.py"):
        assert "Nothing to be done" in snakemake(finished_run, "-n", "--configfile", TEST_CONFIG)
    with planted_code_edit(finished_run, "models/micro_training.py"):
        assert planned_jobs(snakemake(finished_run, "-n", "--configfile", TEST_CONFIG))["model"] == 2


def test_editing_the_training_through_the_receiver_refits_only_the_bridges_trained_so(finished_run):
    """The bridge rule's fingerprint is its method's code path: only a bridge trained through the receiver runs
    it (1 pair x 2 seeds of `trained`); the five closed-form and Adam fits (10 jobs) imported it too, in a
    function, and reran for every edit to it."""
    with planted_code_edit(finished_run, "bridges/through_receiver.py"):
        jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", TEST_CONFIG))
    assert jobs["bridge"] == 2 and "activations" not in jobs and "model" not in jobs


def test_changing_eval_size_reruns_only_its_dependents(finished_run):
    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())
    config["data"]["sizes"]["eval"] += 10
    changed = finished_run / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(changed)))
    assert jobs == totalled({"dataset_split": 1, "dataset_stats": 1, "model_accuracy": 2, "accuracy_summary": 1,
                             "activations": 2, "bridge": 14, "bridge_metrics": 1, **DOWNSTREAM_OF_BRIDGES, **KV_ON_EVAL,
                             **figures_reading("data/stats.parquet", *CAUSAL), "sender_causal": 1,
                             "receiver_causal": 1, "all": 1})


def test_tuning_the_mlp_refits_only_the_mlp_bridges(finished_run):
    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())
    config["bridge"]["mlp"]["epochs"] += 1
    changed = finished_run / "changed_mlp.yaml"
    changed.write_text(yaml.safe_dump(config))
    output = snakemake(finished_run, "-n", "--configfile", str(changed))
    # mlp is not injected by this config
    assert planned_jobs(output) == totalled({"bridge": 2, "bridge_metrics": 1, **figures_reading(METRICS), "all": 1})
    assert re.findall(r"method=(\w+)", output) == ["mlp", "mlp"]


def test_another_seed_adds_only_its_jobs(finished_run):
    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())
    config["bridge"]["seeds"] += 1
    changed = finished_run / "more_seeds.yaml"
    changed.write_text(yaml.safe_dump(config))
    output = snakemake(finished_run, "-n", "--configfile", str(changed))
    assert planned_jobs(output) == totalled({"bridge": 7, "bridge_metrics": 1, "injection": 2, "condition_stats": 2,
                                             "stats_summary": 1, "verdict": 1,
                                             **figures_reading(METRICS, ACROSS_SEEDS, VERDICT), "all": 1})
    assert set(re.findall(r"seed=(\d+)", output)) == {"2"}


def test_changing_the_receiver_retrains_only_the_receiver(finished_run):
    config = yaml.safe_load((finished_run / TEST_CONFIG).read_text())
    config["models"]["receiver"]["micro"]["steps"] += 5
    changed = finished_run / "changed_receiver.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(finished_run, "-n", "--configfile", str(changed)))
    assert jobs == totalled({"model": 1, "dataset_stats": 1, "model_accuracy": 1, "accuracy_summary": 1,
                             "activations": 3, "bridge": 14, "bridge_metrics": 1, **DOWNSTREAM_OF_BRIDGES,
                             "kv_map": 1, **KV_ON_EVAL, **figures_reading("models/accuracy.parquet", CAUSAL[1]),
                             "receiver_causal": 1,
                             "all": 1})
