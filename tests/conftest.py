from __future__ import annotations

import contextlib
import subprocess

import pytest

from actbridge.data.worlds import DataConfig, build_split
from actbridge.models.tokenizer import train_bpe_tokenizer

SMALL_SIZES = {"lm_train": 300, "bridge_train": 20, "bridge_val": 10, "eval": 30}


@pytest.fixture(scope="session")
def test_run(tmp_path_factory):
    """The `.test` config run once per suite, from clean, by the first test that asks (every asker is marked
    `workflow`). Read it only: a test that changes anything works on ``tests.pipeline.copy_finished`` of it.
    The suite fails at the end if a file under its results changed."""
    from tests.pipeline import finished_test_run, tree_digest

    workdir = finished_test_run(tmp_path_factory.mktemp("test_run") / "actbridge")
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


# `make test` runs the suite on two pytest-xdist workers with `--dist loadgroup`: a module's tests stay on one
# worker (its module-scoped fixtures, a pipeline run among them, are built once), and the modules that read the
# shared `.test` run (`test_run`) form one group, so it is built once too.
SHARED_RUN_GROUP = "test_run"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
