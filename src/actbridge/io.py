"""Atomic, sealed file output: a killed job never leaves a partial file that looks complete, and every output
carries the sha256 of what its job wrote.

A file is sealed by a sidecar ``<name>.sha256`` beside it (``sha256sum -c`` reads it); a directory by a
``SHA256SUMS`` inside it that lists every file under it. A file written inside a directory that is still being
built is sealed with that directory. Readers check the seals with :mod:`actbridge.integrity`.
"""

from __future__ import annotations

import contextlib
import errno
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


SIDECAR_SUFFIX = ".sha256"
DIGESTS = "SHA256SUMS"
# Snakemake marks a directory output with this file once its job has finished: not part of what the job wrote.
SNAKEMAKE_MARKER = ".snakemake_timestamp"
TEMPORARY_SUFFIX = ".tmp"


def sidecar_of(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def digest_line(digest: str, name: str) -> str:
    """One line of ``sha256sum``'s output (text mode), which ``sha256sum -c`` checks."""
    return f"{digest}  {name}\n"


def directory_files(directory: Path) -> list[str]:
    """Every file under ``directory`` that its job wrote, as sorted relative POSIX paths."""
    return sorted(path.relative_to(directory).as_posix() for path in directory.rglob("*")
                  if path.is_file() and path.name not in (DIGESTS, SNAKEMAKE_MARKER))


def seal_directory(directory: str | os.PathLike[str]) -> None:
    directory = Path(directory)
    lines = "".join(digest_line(sha256_file(directory / name), name) for name in directory_files(directory))
    with atomic_path(directory / DIGESTS) as tmp:
        tmp.write_text(lines, encoding="utf-8")


def seal_file(path: str | os.PathLike[str]) -> None:
    path = Path(path)
    with atomic_path(sidecar_of(path)) as tmp:
        tmp.write_text(digest_line(sha256_file(path), path.name), encoding="utf-8")


def _inside_unpublished_directory(path: Path) -> bool:
    """Whether ``path`` lies in a directory :func:`atomic_directory` is still building (sealed as a whole)."""
    return any(parent.name.startswith(".") and parent.name.endswith(TEMPORARY_SUFFIX) for parent in path.parents)


def _disk_full_names(error: OSError, final: Path) -> OSError:
    if error.errno == errno.ENOSPC:
        return OSError(errno.ENOSPC, f"no space left on the device while writing {final}; nothing was written "
                                     "there: free space and run snakemake again")
    return error


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` on success.

    The temporary sits in the same directory so the rename is atomic on POSIX.
    On any exception the temporary is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TEMPORARY_SUFFIX, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _publish_mode(tmp, directory=False)
        os.replace(tmp, final)
        if final.name != DIGESTS and not final.name.endswith(SIDECAR_SUFFIX) and not _inside_unpublished_directory(final):
            seal_file(final)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise _disk_full_names(error, final) from error
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; swap it into place on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=TEMPORARY_SUFFIX, dir=final.parent))
    try:
        yield tmp
        seal_directory(tmp)
        _publish_mode(tmp, directory=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _disk_full_names(error, final) from error
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
