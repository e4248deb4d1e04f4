"""Integrity end to end: every fault a user meets is named, nothing damaged is used, and one plain rerun
rebuilds outputs equal to a clean run's.

The first half plants faults in the helpers (a disk that fills, a flipped byte, a missing seal, rows a
writer left out, a killed job's leftovers, models and devices this machine cannot serve). The second half
runs a small configuration through Snakemake once, then for each case damages it as a user or a crash
would, checks the failing run's message, reruns once, and compares every output with the clean run's.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from actbridge.integrity import (CorruptOutputError, read_table, remove_leftovers, rows_problem, start_job, verify,
                                 verify_outputs)
from actbridge.io import atomic_directory, atomic_path, seal_directory, seal_file, write_parquet, write_text
from tests.pipeline import copy_workflow, run_snakemake

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- the helpers


def flip(path: Path, offset: int, count: int = 1) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_full_disk_names_the_file_and_leaves_the_previous_output(tmp_path, monkeypatch):
    target = tmp_path / "table.parquet"
    write_parquet(pa.table({"x": [1]}), target)
    before = target.read_bytes(), (tmp_path / "table.parquet.sha256").read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(OSError, match=r"no space left on the device while writing .*table.parquet.*run snakemake"):
        write_parquet(pa.table({"x": [2]}), target)
    assert (target.read_bytes(), (tmp_path / "table.parquet.sha256").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet", "table.parquet.sha256"]
    with pytest.raises(OSError, match=r"while writing .*model"):
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "weights").write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet", "table.parquet.sha256"]


def test_a_flipped_byte_a_missing_seal_and_a_foreign_file_are_named_and_moved_aside(tmp_path):
    table = tmp_path / "rows.parquet"
    write_parquet(pa.table({"x": list(range(100))}), table)
    assert read_table(table).num_rows == 100
    flip(table, 40)
    with pytest.raises(CorruptOutputError, match=r"rows.parquet does not match the sha256 in rows.parquet.sha256.*"
                                                 r"moved it to .*rows.parquet.corrupt: run snakemake again"):
        read_table(table)
    assert not table.exists() and (tmp_path / "rows.parquet.corrupt").is_file()
    assert (tmp_path / "rows.parquet.corrupt.sha256").is_file()  # the seal goes with it, for inspection

    unsealed = tmp_path / "copied.parquet"
    pq.write_table(pa.table({"x": [1]}), unsealed)  # written by another tool
    with pytest.raises(CorruptOutputError, match="copied.parquet has no seal"):
        verify(unsealed)

    with atomic_directory(tmp_path / "bridge") as tmp:
        (tmp / "bridge.safetensors").write_bytes(b"weights" * 10)
        (tmp / "bridge.json").write_text("{}")
    verify(tmp_path / "bridge")
    (tmp_path / "bridge" / "notes.txt").write_text("mine")
    with pytest.raises(CorruptOutputError, match=r"bridge holds \['notes.txt'\], which its job did not write"):
        verify(tmp_path / "bridge")
    assert (tmp_path / "bridge.corrupt" / "notes.txt").is_file()


def test_a_sealed_file_its_writer_got_wrong_is_still_caught_by_its_reader(tmp_path):
    """The seal proves the bytes are what the job wrote; parsing and coverage prove they are what it should
    have written: a writer bug is named the same way."""
    garbage = tmp_path / "table.parquet"
    write_text("not parquet", garbage)
    with pytest.raises(CorruptOutputError, match="table.parquet is not readable Parquet"):
        read_table(garbage)
    foreign = tmp_path / "foreign.parquet"
    write_parquet(pa.table({"y": ["a"]}), foreign)
    with pytest.raises(CorruptOutputError, match="foreign.parquet has an unexpected schema"):
        read_table(foreign, pa.schema([("x", pa.int64())]))
    rows = pa.table({"pair": ["s1-r2", "s1-r2"], "role": ["last", "bridge"]})
    assert rows_problem(rows, {"pair": ["s1-r2"], "role": ["last", "bridge"]}) is None
    assert rows_problem(rows, {"pair": ["s1-r2", "s2-r3"], "role": ["last"]}) == (
        "lacks 1 of the 2 (pair, role) combinations the config asks for (first: {'pair': 's2-r3', 'role': 'last'})")


def test_the_next_run_of_a_killed_job_removes_what_it_left(tmp_path):
    output = tmp_path / "bridges" / "seed1"
    (tmp_path / "bridges").mkdir()
    (tmp_path / "bridges" / ".seed1.x8k2.tmp").mkdir()
    (tmp_path / "bridges" / ".seed1.x8k2.tmp" / "half.safetensors").write_bytes(b"h")
    (tmp_path / "bridges" / ".seed10.a.tmp").mkdir()  # another job's
    assert [p.name for p in remove_leftovers(output)] == [".seed1.x8k2.tmp"]
    assert [p.name for p in (tmp_path / "bridges").iterdir()] == [".seed10.a.tmp"]


def test_a_job_verifies_every_input_and_names_all_that_fail_at_once(tmp_path):
    class Job:  # what a rule script sees as `snakemake`
        input = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), str(tmp_path / "c.parquet")]
        output = [str(tmp_path / "out.parquet")]
        log = [str(tmp_path / "job.log")]

    for name in "abc":
        write_parquet(pa.table({"x": [1, 2, 3]}), tmp_path / f"{name}.parquet")
    flip(tmp_path / "a.parquet", 30)
    (tmp_path / "c.parquet").write_bytes((tmp_path / "c.parquet").read_bytes()[:50])
    (tmp_path / ".out.parquet.q1.tmp").write_bytes(b"left by a killed run")
    try:
        with pytest.raises(CorruptOutputError) as caught:
            start_job(Job)
    finally:
        import logging

        logging.getLogger().handlers.clear()
        sys.stderr = sys.__stderr__
    message = str(caught.value)
    assert "a.parquet does not match" in message and "c.parquet does not match" in message
    assert "b.parquet" not in message and message.endswith("Run snakemake again to rebuild them and everything "
                                                           "that reads them.")
    assert not (tmp_path / ".out.parquet.q1.tmp").exists()
    assert sorted(p.name for p in tmp_path.glob("*.corrupt")) == ["a.parquet.corrupt", "c.parquet.corrupt"]


def test_verify_command_checks_every_output_and_sets_aside_what_fails(tmp_path):
    results = tmp_path / "results"
    write_text("# verdict\n", results / "stats" / "verdict.md")
    with atomic_directory(results / "bridges" / "s1-r2" / "ridge" / "seed0") as tmp:
        (tmp / "bridge.safetensors").write_bytes(b"w")
    assert verify_outputs(results) == []
    (results / "stats" / "verdict.md").write_text("# verdict, edited by hand\n")
    (results / "bridges" / "s1-r2" / "ridge" / ".seed0.z.tmp").mkdir()  # a leftover: not an output
    result = subprocess.run([sys.executable, "-m", "actbridge", "verify", str(results)], capture_output=True,
                            text=True)
    assert result.returncode == 1 and "verdict.md does not match" in result.stdout
    assert "1 output(s) moved aside: run snakemake again" in result.stdout
    assert (results / "stats" / "verdict.md.corrupt").is_file()


def test_models_this_project_cannot_load_are_named_before_loading_anything(tmp_path):
    from actbridge.models.preflight import device_problem, model_problems

    assert model_problems({"path": str(tmp_path / "nowhere")}, key="models.receiver") == [
        f"config key models.receiver: directory {tmp_path / 'nowhere'} does not exist"]
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (pickled / "pytorch_model.bin").write_bytes(b"")
    [problem] = model_problems({"path": str(pickled)}, key="models.sender")
    assert "config key models.sender" in problem and "found ['pytorch_model.bin']" in problem
    assert "safe_serialization=True" in problem
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "frobnicator",
                                                     "auto_map": {"AutoConfig": "modeling.FrobConfig"}}))
    (remote / "model.safetensors").write_bytes(b"")
    [problem] = model_problems({"path": str(remote)}, key="models.sender")
    assert "model_type 'frobnicator'" in problem and "never runs a model's own code" in problem
    assert "trust_remote_code=True" not in problem
    import torch

    if not torch.cuda.is_available():
        assert device_problem("cuda").startswith("config key device: 'cuda', but ")
        assert "use device: auto" in device_problem("cuda")
    assert device_problem("auto") is None and device_problem("cpu") is None


def test_bounds_are_stated_in_the_messages():
    from actbridge.activations.layers import layer_pairs
    from actbridge.catalog import validate_config
    from actbridge.config import ConfigError

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.setdefault("stats", {})["confidence"] = 1.5
    with pytest.raises(ConfigError, match=r"config key stats.confidence: .*< 1"):
        validate_config(config)
    with pytest.raises(ValueError, match=r"bridge.pairs: pairs \[\(2, 7\)\] name layers the models do not have "
                                         r"\(sender 0..4, receiver 0..6"):
        layer_pairs([[2, 7]], range(5), range(7), n_sender=4, n_receiver=6)


# ------------------------------------------------------------------------------------ through the workflow


def snakemake(workdir: Path, *args: str, check: bool = True) -> tuple[int, str]:
    return run_snakemake(workdir, "--configfile", "small.yaml", *args, check=check)


def outputs(results: Path) -> dict[str, str]:
    """sha256 of every output, PDFs aside (their creation date differs from run to run)."""
    return {path.relative_to(results).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(results.rglob("*")) if path.is_file() and "benchmarks" not in path.parts
            and not path.name.endswith((".pdf", ".pdf.sha256"))
            and not any(".corrupt" in part for part in path.relative_to(results).parts)}


def logs_text(workdir: Path, under: str) -> str:
    return "".join(path.read_text() for path in sorted((workdir / "logs" / under).rglob("*.log")))


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The `.test` config cut to one bridge method and four conditions: every stage, in about a minute."""
    workdir = tmp_path_factory.mktemp("integrity")
    copy_workflow(workdir)
    config = yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text())
    config["data"]["context_modes"] = ["shared", "asymmetric"]
    config["activations"]["roles"] = ["last"]
    config["bridge"]["methods"] = ["ridge"]
    config["injection"].update(methods=["ridge"], conditions=["none", "add", "replace", "self_patch"], alphas=[1.0],
                               roles=["last"])
    config["stats"].update(resamples=500, hierarchical_resamples=200)
    config["kv"]["enabled"] = False  # its reading and writing go through the same integrity calls as injection's
    (workdir / "small.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir, "--cores", "2")
    return workdir, outputs(workdir / "results")


def rebuilt_equal(workdir: Path, expected: dict[str, str]) -> str:
    """One plain rerun: it succeeds, and every output equals the clean run's."""
    _, output = snakemake(workdir, "--cores", "2")
    assert outputs(workdir / "results") == expected
    assert not [path for path in (workdir / "results").rglob("*.tmp")], "a killed job's leftovers remain"
    return output


INJECTION = "results/injection/s2-r3/ridge"
BRIDGES = "results/bridges/s2-r3/ridge"


ARTIFACTS = {  # one output of every kind the workflow writes, and where in it to flip a byte
    "data split": "data/eval.parquet", "dataset statistics": "data/stats.md", "micro model": "models/receiver",
    "model accuracy": "models/accuracy.parquet", "activation shards": "activations/sender/eval",
    "bridge": "bridges/s2-r3/ridge/seed0", "bridge metrics": "bridges/metrics.parquet",
    "injection table": "injection/s2-r3/ridge/seed1.parquet", "causal table": "causal/receiver.parquet",
    "per-pair statistics": "stats/s2-r3/ridge/across_seeds.parquet", "summary": "stats/summary.md",
    "verdict table": "stats/verdict.parquet", "verdict": "stats/verdict.md", "figure": "figures/relay.png",
}


@pytest.mark.workflow
@pytest.mark.parametrize("kind", list(ARTIFACTS))
def test_a_byte_flip_in_any_artifact_is_named_by_its_reader(clean, tmp_path, kind):
    workdir, _ = clean
    source = workdir / "results" / ARTIFACTS[kind]
    copy = tmp_path / source.name
    if source.is_dir():
        shutil.copytree(source, copy)
        target = max((p for p in copy.rglob("*") if p.is_file() and p.name != "SHA256SUMS"),
                     key=lambda p: p.stat().st_size)
    else:
        shutil.copy2(source, copy)
        shutil.copy2(source.with_name(source.name + ".sha256"), tmp_path / (source.name + ".sha256"))
        target = copy
    verify(copy)
    flip(target, target.stat().st_size // 2)
    with pytest.raises(CorruptOutputError, match=rf"{re.escape(str(copy))} .*(does|do) not match the sha256.*"
                                                 r"run snakemake again"):
        verify(copy)
    assert (tmp_path / (copy.name + ".corrupt")).exists() and not copy.exists()


@pytest.mark.workflow
def test_a_corrupted_bridge_is_named_moved_aside_and_rebuilt(clean):
    """A flip after the safetensors header (used silently before) and one inside the header (a SafetensorError
    naming no file before), and the empty temporary directory a killed bridge job leaves."""
    workdir, expected = clean
    flip(workdir / BRIDGES / "seed0" / "last" / "shared" / "bridge.safetensors", 200, 40)
    flip(workdir / BRIDGES / "seed1" / "last" / "shared" / "bridge.safetensors", 12, 4)
    (workdir / BRIDGES / ".seed1.k1ll.tmp").mkdir()
    # nothing is out of date (Snakemake stamps a directory output when its job ends): force the readers, as
    # a user would, or let `python -m actbridge verify` check everything at rest
    code, output = snakemake(workdir, "--cores", "2", "--keep-going", "--forcerun", "injection", check=False)
    assert code != 0
    log = logs_text(workdir, "injection")
    for seed in (0, 1):
        assert (f"{BRIDGES}/seed{seed} has ['last/shared/bridge.safetensors'] that do not match the sha256 in "
                f"its SHA256SUMS") in log
        assert (workdir / BRIDGES / f"seed{seed}.corrupt").is_dir()
    assert "run snakemake again" in log
    output = rebuilt_equal(workdir, expected)
    assert "rule bridge" in output and "rule injection" in output


@pytest.mark.workflow
def test_injection_rows_missing_from_both_seeds_are_named_against_eval(clean):
    """Rows a writer left out (sealed as written): the statistics name each file and what it lacks."""
    workdir, expected = clean
    for seed in (0, 1):
        path = workdir / INJECTION / f"seed{seed}.parquet"
        table = pq.read_table(path)
        dropped = sorted(set(table.column("example_id").to_pylist()))[:5]
        write_parquet(table.filter(pc.invert(pc.is_in(table.column("example_id"), pa.array(dropped)))), path)
    code, _ = snakemake(workdir, "--cores", "2", check=False)
    assert code != 0
    log = logs_text(workdir, "stats/s2-r3")
    for seed in (0, 1):
        assert re.search(rf"{INJECTION}/seed{seed}.parquet lacks the baseline rows of \d+ of the \d+ eval "
                         r"\(example, mode\) rows \(first: \[\('eval-000000', 'shared'\)", log)
    rebuilt_equal(workdir, expected)


@pytest.mark.workflow
def test_injection_rows_removed_from_one_seed_break_its_seal(clean):
    workdir, expected = clean
    path = workdir / INJECTION / "seed1.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(5), path)  # edited in place by another tool: the seal no longer matches
    code, _ = snakemake(workdir, "--cores", "2", check=False)
    assert code != 0
    assert f"{INJECTION}/seed1.parquet does not match the sha256" in logs_text(workdir, "stats/s2-r3")
    assert (workdir / INJECTION / "seed1.parquet.corrupt").is_file()
    rebuilt_equal(workdir, expected)


@pytest.mark.workflow
def test_a_truncated_split_is_moved_aside_and_rebuilt(clean):
    workdir, expected = clean
    path = workdir / "results" / "data" / "eval.parquet"
    path.write_bytes(path.read_bytes()[:1000])
    code, output = snakemake(workdir, "--cores", "2", check=False)
    assert code != 0 and "eval.parquet does not match the sha256" in logs_text(workdir, "")
    assert (workdir / "results" / "data" / "eval.parquet.corrupt").is_file()
    output = rebuilt_equal(workdir, expected)
    assert "rule dataset_split" in output


@pytest.mark.workflow
def test_edited_markdown_and_a_flipped_causal_table_are_caught_before_they_are_reported(clean):
    workdir, expected = clean
    verdict = workdir / "results" / "stats" / "verdict.md"
    verdict.write_text(verdict.read_text().replace("no effect", "helps"))
    flip(workdir / "results" / "causal" / "sender.parquet", 100)
    result = subprocess.run([sys.executable, "-m", "actbridge", "verify"], cwd=workdir, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(workdir / "src")})
    assert result.returncode == 1
    assert "results/stats/verdict.md does not match" in result.stdout
    assert "results/causal/sender.parquet does not match" in result.stdout
    output = rebuilt_equal(workdir, expected)
    assert "rule sender_causal" in output and "rule injection" not in output


@pytest.mark.workflow
def test_ctrl_c_and_kill_9_mid_job_then_unlock_and_one_rerun(clean):
    """Ctrl-C stops cleanly (no lock left); kill -9 of Snakemake and its job leaves the lock, which the next run
    names; after --unlock one run redoes the killed job and what follows it."""
    workdir, expected = clean
    log = workdir / "logs" / "injection" / "s2-r3" / "ridge" / "seed0.log"

    def start_and_wait() -> subprocess.Popen:
        log.unlink(missing_ok=True)
        run = subprocess.Popen([sys.executable, "-m", "snakemake", "--configfile", "small.yaml", "--cores", "1",
                                "--forcerun", "injection"], cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 300
        while not _text(log):  # the job has started: it logs from its first line
            assert time.monotonic() < deadline and run.poll() is None, "the injection job never started"
            time.sleep(0.2)
        time.sleep(1.0)
        return run

    run = start_and_wait()
    stopped = time.monotonic()
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=60) != 0
    assert time.monotonic() - stopped < 30
    assert not list((workdir / INJECTION).glob(".seed0.parquet.*.tmp"))

    run = start_and_wait()
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    code, output = snakemake(workdir, "--cores", "2", check=False)
    assert code != 0 and "--unlock" in output
    snakemake(workdir, "--unlock")
    output = rebuilt_equal(workdir, expected)
    assert "rule injection" in output


def _text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


@pytest.mark.workflow
def test_models_devices_and_bounds_are_reported_before_any_job(clean, tmp_path):
    workdir, expected = clean
    config = yaml.safe_load((workdir / "small.yaml").read_text())
    stamp = (workdir / "results" / "data" / "eval.parquet").stat().st_mtime_ns

    def plan(change, *args):
        changed = json.loads(json.dumps(config))
        change(changed)
        (workdir / "changed.yaml").write_text(yaml.safe_dump(changed))
        result = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "changed.yaml", *args],
                                cwd=workdir, capture_output=True, text=True, timeout=300)
        return result.returncode, result.stdout + result.stderr

    import torch

    if not torch.cuda.is_available():
        code, output = plan(lambda c: c.update(device="cuda"), "-n")
        assert code == 0 and "config key device: 'cuda'" in output  # a dry run warns: jobs may go to GPU nodes
        code, output = plan(lambda c: c.update(device="cuda"), "--cores", "1", "--forcerun", "dataset_split")
        assert code != 0 and "config key device: 'cuda'" in output and "use device: auto" in output
    code, output = plan(lambda c: c["models"].update(receiver={"path": str(tmp_path / "missing")}), "-n")
    assert code != 0 and f"config key models.receiver: directory {tmp_path / 'missing'} does not exist" in output
    code, output = plan(lambda c: c["bridge"].update(pairs=[[2, 7]]), "-n")
    assert code != 0 and "name layers the models do not have (sender 0..2, receiver 0..3" in output
    code, output = plan(lambda c: c["stats"].update(confidence=1.5), "-n")
    assert code != 0 and "config key stats.confidence" in output and "< 1" in output
    assert (workdir / "results" / "data" / "eval.parquet").stat().st_mtime_ns == stamp  # no job ran
    assert outputs(workdir / "results") == expected


def test_every_rule_script_starts_its_job_verified():
    """Every rule script begins with start_job (verified inputs, leftovers removed) and reads Parquet outputs
    through the verified reader: no stage writes its own variant."""
    import ast

    for script in sorted((ROOT / "workflow" / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
        names = [call.id if isinstance(call, ast.Name) else call.attr for call in calls
                 if isinstance(call, (ast.Name, ast.Attribute))]
        assert "start_job" in names, f"{script.name} does not start with start_job(snakemake)"
        assert "log_to_file" not in names, f"{script.name}: start_job opens the log"
        plain = [call for call in calls if isinstance(call, ast.Attribute) and call.attr == "read_table"
                 and isinstance(call.value, ast.Name) and call.value.id == "pq"]
        assert not plain, f"{script.name} reads Parquet without verifying it (use actbridge.integrity.read_table)"
