"""The `workflow` mark is what `make test-fast` leaves out: a test that starts Snakemake without it fails."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_an_unmarked_test_cannot_start_snakemake():
    with pytest.raises(AssertionError, match="not marked `workflow`"):
        subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True)
    assert subprocess.run([sys.executable, "-c", "print('other commands run')"], capture_output=True,
                          text=True).stdout.strip() == "other commands run"


@pytest.mark.workflow
def test_a_marked_test_starts_snakemake():
    version = subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert version.split(".")[0].isdigit()
