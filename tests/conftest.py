from __future__ import annotations

import pytest

from actbridge.data.worlds import DataConfig, build_split
from actbridge.models.tokenizer import train_bpe_tokenizer

SMALL_SIZES = {"lm_train": 300, "bridge_train": 20, "bridge_val": 10, "eval": 30}


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
