"""The pretrained profile's code path through the workflow, on tiny generated models of two architectures
and two tokenizers: a Llama sender written as a GGUF file with weights (no BOS) and a Gemma-3 receiver saved
as a ``{path}`` directory whose tokenizer puts a BOS before every prompt. ``config/pretrained.yaml`` itself
is the config, only its models, sizes and layers made tiny, so the profile's file is what is tested.

* From a clean tree, every figure and table is a target of its own (``snakemake -n <file>``).
* data -> verdict runs; the GGUF sender is de-quantized once by the model rule.
* Once the models exist, the DAG reads their shapes from ``model.json``: with the GGUF file and the
  converted weights' config gone, ``snakemake -n`` still resolves every job.
"""

from __future__ import annotations


import pyarrow.parquet as pq
import pytest
import yaml
from tokenizers import processors

from actbridge.data.worlds import DataConfig, build_split
from actbridge.models.tokenizer import EOS_TOKEN, train_bpe_tokenizer
from actbridge.report import FIGURES
from tests.gguf_writer import tiny_llama, write_llama_gguf
from tests.test_bounded_scoring import gemma3_model
from tests.pipeline import ROOT, copy_workflow, planned_jobs, planted_code_edit, snakemake

pytestmark = pytest.mark.workflow

pytest.importorskip("gguf")
pytest.importorskip("accelerate")

FIGURES = ("dataset", "bridge_quality", "injection_sweep", "replacement", "causal_sender", "causal_receiver",
           "asymmetric", "relay")
TABLES = ("data/stats.md", "models/accuracy.md", "bridges/metrics.md", "stats/summary.md", "stats/verdict.md",
          "causal/sender.md", "causal/receiver.md")
TARGETS = [f"results/figures/{figure}.pdf" for figure in FIGURES] + [f"results/{table}" for table in TABLES]
# The model checkpoint's outputs, named as targets: a dry run of the whole DAG stops at the first checkpoint it
# would rerun, and would not show whether the other model's job reruns too.
MODEL_DIRS = ("results/models/sender", "results/models/receiver")


def tiny_pair(directory, texts):
    """(sender spec, receiver spec): a Llama GGUF with a plain BPE tokenizer, a Gemma-3 directory with a BOS one."""
    sender_tokenizer = train_bpe_tokenizer(texts, vocab_size=500)
    (directory / "sender").mkdir(parents=True)
    write_llama_gguf(tiny_llama(sender_tokenizer, layers=3), sender_tokenizer, directory / "sender" / "tiny.gguf")
    receiver_tokenizer = train_bpe_tokenizer(texts, vocab_size=700)
    bos = receiver_tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    receiver_tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{EOS_TOKEN} $A", special_tokens=[(EOS_TOKEN, bos)])
    receiver = gemma3_model(receiver_tokenizer, sliding_window=16)
    receiver.save_pretrained(directory / "receiver")
    receiver_tokenizer.save_pretrained(directory / "receiver")
    return ({"path": str(directory / "sender"), "gguf_file": "tiny.gguf"}, {"path": str(directory / "receiver")})


@pytest.fixture(scope="module")
def named_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("named_models")
    copy_workflow(workdir)
    config = yaml.safe_load((ROOT / "config" / "pretrained.yaml").read_text())
    data = DataConfig.from_config({**config, "data": {**config["data"], "sizes": {"lm_train": 300}}})
    texts = build_split(data, "lm_train").column("full_prompt").to_pylist()
    sender, receiver = tiny_pair(workdir / "tiny", texts)
    config.update(device="cpu", threads=1)
    config["models"] = {"sender": sender, "receiver": receiver}
    config["data"]["sizes"] = {"lm_train": 10, "bridge_train": 40, "bridge_val": 20, "eval": 24}
    config["activations"]["layers"] = {"sender": [2, 3], "receiver": [2, 3]}
    config["bridge"].update(pairs=[[2, 2], [3, 3]], seeds=1, methods=["ridge"])
    config["injection"].update(methods=["ridge"])
    config["stats"] = {"resamples": 500, "hierarchical_resamples": 200}
    (workdir / "named.yaml").write_text(yaml.safe_dump(config))
    # the pairs from both depths: the receiver-side profile's layers then wait on the sender's checkpoint too
    relative = {**config, "bridge": {**config["bridge"], "pairs": "relative_depth"}}
    (workdir / "named_relative.yaml").write_text(yaml.safe_dump(relative))
    return workdir


def test_every_figure_and_table_is_a_target_from_a_clean_tree(named_workdir):
    from concurrent.futures import ThreadPoolExecutor

    def plan(case):  # each target alone: a rule whose params need a checkpoint it does not take fails here
        target, configfile = case
        return planned_jobs(snakemake(named_workdir, "-n", target, "--configfile", configfile))

    # Each target alone with relative-depth pairs, the config whose input functions wait on both models'
    # checkpoints (a superset of what explicit pairs wait on); explicit pairs once, as the whole DAG.
    cases = [(target, "named_relative.yaml") for target in TARGETS] + [("all", "named.yaml")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for case, jobs in zip(cases, pool.map(plan, cases)):
            assert "model" in jobs, case  # waits on the model checkpoint, never fails before it


@pytest.fixture(scope="module")
def named_run(named_workdir):
    snakemake(named_workdir, "--configfile", "named.yaml", "--cores", "2")
    return named_workdir


def test_the_profile_code_path_runs_data_to_verdict(named_run):
    results = named_run / "results"
    assert "## " in (results / "stats" / "verdict.md").read_text()
    accuracy = pq.read_table(results / "models" / "accuracy.parquet").to_pylist()
    assert {r["model"] for r in accuracy} == {"sender", "receiver"}
    record = yaml.safe_load((results / "models" / "sender" / "model.json").read_text())
    assert record["kind"] == "gguf" and record["converted"] and record["shape"]["num_layers"] == 3
    injected = pq.read_table(results / "injection" / "s2-r2" / "ridge" / "seed0.parquet")
    assert injected.num_rows > 0 and set(injected.column("mode").to_pylist()) == {"shared", "asymmetric", "relay"}
    for figure in FIGURES:
        assert (results / "figures" / f"{figure}.png").stat().st_size > 0


@pytest.mark.parametrize("module", ["models/micro_training.py", "models/micro.py", "data/worlds.py",
                                    "models/scoring.py", "models/loading.py"])
def test_an_edit_to_code_the_conversion_never_runs_leaves_the_converted_models(named_run, module):
    """The model rule's fingerprint is its model's code path: editing the micro trainer, the data generator or the
    scoring and loading code of later jobs reruns those jobs, never the conversion of a named model."""
    with planted_code_edit(named_run, module):
        assert "Nothing to be done" in snakemake(named_run, "-n", *MODEL_DIRS, "--configfile", "named.yaml"), module


def test_an_edit_to_the_conversion_converts_both_named_models_again(named_run):
    with planted_code_edit(named_run, "models/conversion.py"):
        jobs = planned_jobs(snakemake(named_run, "-n", *MODEL_DIRS, "--configfile", "named.yaml"))
    assert jobs["model"] == 2


def test_once_the_models_exist_the_dag_never_reads_their_weights(named_run):
    (named_run / "tiny" / "sender" / "tiny.gguf").unlink()
    (named_run / "results" / "models" / "sender" / "weights" / "config.json").unlink()
    (named_run / "tiny" / "receiver" / "config.json").unlink()
    output = snakemake(named_run, "-n", "--configfile", "named.yaml", "--forcerun", "bridge", "receiver_causal")
    jobs = planned_jobs(output)
    assert jobs["injection"] == 2 and jobs["bridge"] == 2 and jobs["receiver_causal"] == 1


def test_a_layer_past_a_named_models_depth_stops_before_any_job_naming_the_key(named_run):
    config = yaml.safe_load((named_run / "named.yaml").read_text())
    config["activations"]["layers"] = {"sender": [2, 9], "receiver": [2, 3]}
    (named_run / "too_deep.yaml").write_text(yaml.safe_dump(config))
    output = snakemake(named_run, "-n", "--configfile", "too_deep.yaml", check=False)
    assert "config key activations.layers (sender)" in output and "[9] out of range" in output
    # Snakemake reports where in the input functions it was raised ("Traceback:"), not a Python crash
    assert "Traceback (most recent call last)" not in output
