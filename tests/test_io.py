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


def test_an_unreadable_or_foreign_output_is_named_and_moved_aside(tmp_path):
    import pyarrow as pa
    import pytest

    from actbridge.io import CorruptOutputError, read_parquet_output, write_parquet

    schema = pa.schema([("x", pa.int64())])
    good = tmp_path / "good.parquet"
    write_parquet(pa.table({"x": [1, 2, 3]}, schema=schema), good)
    assert read_parquet_output(good, schema).column("x").to_pylist() == [1, 2, 3]
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:20])
    with pytest.raises(CorruptOutputError, match="truncated.parquet is not readable Parquet.*run snakemake again"):
        read_parquet_output(truncated, schema)
    assert not truncated.exists() and (tmp_path / "truncated.parquet.corrupt").is_file()
    foreign = tmp_path / "foreign.parquet"
    write_parquet(pa.table({"y": ["a"]}), foreign)
    with pytest.raises(CorruptOutputError, match="foreign.parquet has an unexpected schema"):
        read_parquet_output(foreign, schema)
