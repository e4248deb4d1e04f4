"""Atomic outputs: nothing half-written ever sits at the final path, and outputs are readable."""

from __future__ import annotations

import os
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actbridge.io import atomic_directory, atomic_path, write_parquet


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a shard")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_failed_directory_keeps_the_previous_one(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "weights").write_text("v2, half")
            raise RuntimeError("killed")
    assert (target / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_parquet(pa.table({"x": [1, 2]}), tmp_path / "t.parquet")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.parquet").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert pq.read_table(tmp_path / "t.parquet").column("x").to_pylist() == [1, 2]


def test_every_output_is_sealed_with_what_its_writer_wrote(tmp_path):
    """A file gets a sha256sum-style sidecar, a directory a SHA256SUMS of every file under it; a file written
    into a directory under construction is sealed with the directory, not on its own."""
    import hashlib

    from actbridge.io import write_json

    write_parquet(pa.table({"x": [1, 2]}), tmp_path / "t.parquet")
    digest = hashlib.sha256((tmp_path / "t.parquet").read_bytes()).hexdigest()
    assert (tmp_path / "t.parquet.sha256").read_text() == f"{digest}  t.parquet\n"
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "sub").mkdir()
        write_json({"a": 1}, tmp / "sub" / "record.json")
        (tmp / "weights").write_bytes(b"w")
    listed = (tmp_path / "d" / "SHA256SUMS").read_text().splitlines()
    assert [line.split("  ")[1] for line in listed] == ["sub/record.json", "weights"]
    assert sorted(p.name for p in (tmp_path / "d").rglob("*")) == ["SHA256SUMS", "record.json", "sub", "weights"]
