"""Running the workflow from tests: one Snakemake invocation, workflow copies, the shared `.test` run.

A clean `.test` run costs minutes; a copy of its finished tree costs seconds. The suite runs it once
(:func:`finished_test_run`, through the session fixture ``test_run`` in ``conftest.py``) and every test that
only reads it reads that tree; a test that plants a fault, edits code or changes a key works on its own copy
(:func:`copy_finished`), on which Snakemake sees exactly what it saw in the original.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from actbridge.report import FIGURES

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("workflow", "config", "profiles", "src", ".test")
TEST_CONFIG = ".test/config/config.yaml"
# A limit that only stops a hung run: on 2 cores shared by the suite's workers and the SLURM cluster's jobs, a
# whole `.test` run has taken 15 minutes.
TIMEOUT_S = 2400


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """``python -m snakemake ARGS`` in ``workdir``: (exit status, stdout and stderr); with ``check`` a failure
    raises, quoting the end of the output."""
    try:
        result = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:  # say where it stood, not only that it ran out of time
        output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                         for part in (expired.stdout, expired.stderr))
        raise AssertionError(f"snakemake {' '.join(args)} ran past {timeout:.0f} s in {workdir}:\n"
                             f"{output[-6000:]}") from None
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed in {workdir}:\n{output[-6000:]}")
    return result.returncode, output


def snakemake(workdir: Path, *args: str, check: bool = True) -> str:
    """:func:`run_snakemake`'s output alone."""
    return run_snakemake(workdir, *args, check=check)[1]


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


def copy_workflow(target: Path) -> Path:
    """``target`` made a workflow directory of its own: the checkout's COPIED folders, without byte code."""
    target.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def copy_finished(source: Path, target: Path) -> Path:
    """A finished workflow directory copied whole (sources, results, logs, Snakemake's metadata), modification
    times kept, so that Snakemake finds in the copy exactly what was up to date in ``source``."""
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "locks",
                                                                                 "incomplete"))
    return target


def finished_test_run(target: Path) -> Path:
    """The `.test` config run from clean in a new workflow copy at ``target``, on 2 cores."""
    copy_workflow(target)
    snakemake(target, "--configfile", TEST_CONFIG, "--cores", "2")
    return target


def tree_digest(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory``, by relative path."""
    return {path.relative_to(directory).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}


@contextlib.contextmanager
def planted_code_edit(workdir: Path, module: str):
    """``src/actbridge/{module}`` of ``workdir`` with a line of code added (its fingerprint changes), restored after."""
    path = workdir / "src" / "actbridge" / module
    original = path.read_text()
    try:
        path.write_text(original + "\nPLANTED_EDIT = 1\n")
        yield
    finally:
        path.write_text(original)


# ---------------------------------------------------------------- what the `.test` run's jobs are

ACROSS_SEEDS, METRICS = "stats/across_seeds.parquet", "bridges/metrics.parquet"
CAUSAL = ("causal/sender.parquet", "causal/receiver.parquet")
VERDICT = "stats/verdict.parquet"


def figures_reading(*tables: str) -> dict[str, int]:
    """One job per figure that reads any of ``tables`` (paths under results/), from actbridge.report.FIGURES:
    the figures a change to those tables reruns (a new figure needs no edit here)."""
    return {f"figure_{name}": 1 for name, spec in FIGURES.items() if set(spec.inputs.values()) & set(tables)}


def totalled(jobs: dict[str, int]) -> dict[str, int]:
    return {**jobs, "total": sum(jobs.values())}


# 1 pair x the ridge and trained bridges x 2 seeds injected, their statistics, the verdict, and the figures drawn from them
DOWNSTREAM_OF_BRIDGES = {"injection": 4, "condition_stats": 2, "stats_summary": 1, "verdict": 1,
                         **figures_reading(METRICS, ACROSS_SEEDS, VERDICT)}


# the KV channel's jobs that read eval: the ridge map's injection jobs (every block sent, one block sent) and their statistics
KV_ON_EVAL = {"kv_injection": 2, "kv_stats": 2}
