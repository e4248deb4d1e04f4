from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest

from actbridge.data.worlds import DataConfig, build_split
from actbridge.models.tokenizer import train_bpe_tokenizer

SMALL_SIZES = {"lm_train": 300, "bridge_train": 20, "bridge_val": 10, "eval": 30}


@pytest.fixture(scope="session")
def test_run(tmp_path_factory):
    """The `.test` config run once per suite, from clean, by the first test that asks (every asker is marked
    `workflow`). Read it only: a test that changes anything works on ``tests.pipeline.copy_finished`` of it.
    The suite fails at the end if a file under its results changed.

    Under pytest-xdist the workers share it: it lives in the directory above the workers' own temporary
    directories, and the first worker to ask builds it under a file lock while any other waits."""
    from filelock import FileLock

    from tests.pipeline import finished_test_run, tree_digest

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    workdir, finished = shared / "test_run" / "actbridge", shared / "test_run.finished"
    with FileLock(str(shared / "test_run.lock")):
        if not finished.exists():
            shutil.rmtree(workdir.parent, ignore_errors=True)  # what a worker that failed building left
            finished_test_run(workdir)
            finished.touch()
    before = tree_digest(workdir / "results")
    yield workdir
    changed = sorted(set(before.items()) ^ set(tree_digest(workdir / "results").items()))
    assert not changed, f"a test wrote into the shared `.test` run (copy it instead): {changed[:5]}"


@pytest.fixture(scope="session")
def small_config() -> DataConfig:
    return DataConfig(seed=3, hops=(1, 2, 3), distractors=3, sizes=SMALL_SIZES)


@pytest.fixture(scope="session")
def eval_table(small_config):
    return build_split(small_config, "eval")


@pytest.fixture(scope="session")
def lm_table(small_config):
    return build_split(small_config, "lm_train")


@pytest.fixture(scope="session")
def tokenizer(lm_table):
    return train_bpe_tokenizer(lm_table.column("full_prompt").to_pylist(), vocab_size=400)


@pytest.fixture(scope="session")
def big_tokenizer(lm_table):
    """A second, different tokenizer: many more merges, so names are often single tokens."""
    return train_bpe_tokenizer(lm_table.column("full_prompt").to_pylist(), vocab_size=2000)


# `make test-fast` runs every test not marked `workflow` or `slurm`. A test that starts Snakemake (a dry run, a
# whole workflow, a fixture's run) must carry the `workflow` mark: an unmarked one fails here, naming itself,
# so the quick loop never quietly grows a pipeline run.
class _UnmarkedSnakemake(subprocess.Popen):
    def __init__(self, args, *positional, **keywords):
        words = [args] if isinstance(args, (str, bytes)) else [str(word) for word in args]
        if any(word == "snakemake" or word.endswith("/snakemake") for word in words):
            raise AssertionError(f"this test starts Snakemake ({' '.join(words)[:120]}) but is not marked "
                                 "`workflow` (pytest.mark.workflow), so `make test-fast` would run it")
        super().__init__(args, *positional, **keywords)


@contextlib.contextmanager
def _snakemake_guard(item):
    if item.get_closest_marker("workflow") or item.get_closest_marker("slurm"):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", _UnmarkedSnakemake)
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _snakemake_guard(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _snakemake_guard(item):
        return (yield)


# `make test` runs the suite on pytest-xdist workers (Makefile, TEST_WORKERS) with `--dist loadfile`: a module's
# tests stay on one worker, so its module-scoped fixtures (a pipeline run among them) are built once. (`loadgroup`
# would group modules, but with pytest 9.2 it silently stops grouping: pytest-dev/pytest-xdist#1386.) The modules
# are handed out in the order below, longest first, so that the SLURM module's waiting on its cluster overlaps
# the other workers' tests instead of closing the suite.
LONGEST_FIRST = ("test_slurm", "test_integrity", "test_workflow", "test_workflow_damage")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.module.__name__.rpartition(".")[2]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: within a module, and among the rest, collection order is kept
