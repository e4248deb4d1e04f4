"""Atomic file output: a killed job never leaves a partial file that looks complete."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _publish_mode(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create private (0600/0700) files; give outputs the usual umask-based mode."""
    path.chmod((0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` on success.

    The temporary sits in the same directory so the rename is atomic on POSIX.
    On any exception the temporary is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _publish_mode(tmp, directory=False)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; swap it into place on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        _publish_mode(tmp, directory=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parquet(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write ``table`` atomically as zstd Parquet with deterministic bytes.

    Statistics and the writer's version string are the only metadata, so the
    same table and pyarrow version give byte-identical files.
    """
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=True)


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


class CorruptOutputError(RuntimeError):
    """An upstream output that cannot be read as what its rule writes; it has been moved aside."""


def read_parquet_output(path: str | os.PathLike[str], schema: pa.Schema | None = None) -> pa.Table:
    """Read a Parquet file another rule wrote, or move it aside and say how to rebuild it.

    A file that is not readable Parquet (truncated, overwritten) or whose
    schema is not ``schema`` (written by an older version) is renamed to
    ``<name>.corrupt`` (derived data, kept for inspection), so that the next
    ``snakemake`` run sees the output missing and rebuilds it.
    """
    path = Path(path)
    try:
        table = pq.read_table(path)
        problem = None if schema is None or table.schema.equals(schema) else "has an unexpected schema"
    except (pa.ArrowInvalid, OSError) as error:
        problem = f"is not readable Parquet ({error})"
    if problem is None:
        return table
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    raise CorruptOutputError(f"{path} {problem}; moved it to {aside}: run snakemake again to rebuild it "
                             "and everything that reads it")
