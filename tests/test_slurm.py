"""The SLURM profile on a real (single-node, localhost) cluster: the `.test` config through
`profiles/slurm` must give the same results as a local run.

Needs root and apt-get (Debian's slurm-wlm and munge are installed when absent); elsewhere it
skips with the reason. Set ACTBRIDGE_REQUIRE_SLURM=1 (as .ci/run does) to turn a skip into a
failure, so CI cannot pass without having proven the profile."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

import pytest

from slurm_localhost import ClusterUnavailable, localhost_cluster
from tests.pipeline import TEST_CONFIG, copy_workflow, run_snakemake

# Every rule and every item of the `.test` config goes through sbatch (each job a round trip through the
# cluster, tens of seconds here); the local run it must equal is the suite's shared `.test` run.
# What differs between a localhost cluster and a real one, and nothing else: no accounting
# (so squeue, not sacct), no account to bill, two CPUs, and a short first status check.
LOCALHOST_OVERRIDES = ("--slurm-status-command", "squeue", "--slurm-no-account",
                       "--slurm-init-seconds-before-status-checks", "5", "--max-threads", "1", "--jobs", "4")
# Files whose bytes legitimately differ between two runs: PDFs embed their creation date,
# training logs their wall-clock seconds, benchmark files the jobs' timings.
TIMED_KEYS = ("seconds",)

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.workflow]


def snakemake(workdir: Path, *args: str) -> str:
    return run_snakemake(workdir, "--configfile", TEST_CONFIG, *args)[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    stack = contextlib.ExitStack()
    try:
        running = stack.enter_context(localhost_cluster(tmp_path_factory.mktemp("slurm-state")))
    except ClusterUnavailable as error:
        if os.environ.get("ACTBRIDGE_REQUIRE_SLURM") == "1":
            pytest.fail(f"ACTBRIDGE_REQUIRE_SLURM=1 but no localhost cluster: {error}")
        pytest.skip(f"no localhost SLURM cluster: {error}")
    with stack:
        yield running
    for name, pid in running.pids.items():  # torn down by PID: none may outlive the tests
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
            pytest.fail(f"{name} (PID {pid}) still runs after teardown")


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("via-slurm") / "actbridge")
    started = time.monotonic()
    try:
        output = snakemake(workdir, "--workflow-profile", "profiles/slurm", *LOCALHOST_OVERRIDES)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{cluster.log_tail()}") from None
    seconds = time.monotonic() - started
    print(f"\n.test config through profiles/slurm on the localhost cluster: {seconds:.0f} s")
    return workdir, output


def comparable(path: Path) -> bytes | None:
    """The bytes two equal runs share: None where only existence can be compared."""
    if path.suffix == ".pdf" or path.name.endswith(".pdf.sha256"):  # a PDF holds its creation date
        return None
    if path.name == "SHA256SUMS":  # a directory's seal: the same, but for the files compared above as timed
        return "".join(line for line in path.read_text().splitlines(keepends=True)
                       if not line.rstrip("\n").endswith("  training_log.jsonl")).encode()
    if path.name == "training_log.jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return json.dumps([{k: v for k, v in row.items() if k not in TIMED_KEYS} for row in rows]).encode()
    return path.read_bytes()


def test_model_running_jobs_went_through_sbatch(slurm_run):
    _, output = slurm_run
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/", output)
    cluster_rules = set(re.findall(r"^(?:rule|checkpoint) (\w+):$", output, re.MULTILINE))
    local_rules = set(re.findall(r"^localrule (\w+):$", output, re.MULTILINE))
    assert {"model", "activations", "bridge", "injection", "condition_stats", "sender_causal"} <= cluster_rules
    assert {rule for _, rule in submitted} == cluster_rules
    assert len({jobid for jobid, _ in submitted}) == output.count("has been submitted with SLURM jobid")
    # gathering and drawing stays on the submitting host
    assert {"all", "stats_summary", "figure_injection_sweep"} <= local_rules and not local_rules & cluster_rules


def test_slurm_results_equal_a_local_run(slurm_run, test_run):
    slurm_dir, _ = slurm_run
    local_results, slurm_results = test_run / "results", slurm_dir / "results"
    local_files = {p.relative_to(local_results) for p in local_results.rglob("*") if p.is_file()}
    slurm_files = {p.relative_to(slurm_results) for p in slurm_results.rglob("*") if p.is_file()}
    assert local_files == slurm_files
    compared = [name for name in sorted(local_files) if name.parts[0] != "benchmarks"]
    differ = [str(name) for name in compared
              if comparable(local_results / name) != comparable(slurm_results / name)]
    assert not differ, f"SLURM and local results differ: {differ}"
    assert sum(name.suffix == ".parquet" for name in compared) >= 20


def test_a_second_slurm_invocation_has_nothing_to_do(slurm_run, cluster):
    workdir, _ = slurm_run
    output = snakemake(workdir, "--workflow-profile", "profiles/slurm", *LOCALHOST_OVERRIDES, "-n")
    assert "Nothing to be done" in output
