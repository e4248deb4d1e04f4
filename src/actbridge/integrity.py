"""One integrity rule for every artifact: a job verifies each file it reads against the seal its writer left
(:mod:`actbridge.io`), and anything that is not what its rule wrote is named, moved aside and rebuilt.

* A file, or a directory output, whose seal is missing or does not match, or that cannot be parsed as what
  its rule writes, or whose rows do not cover what the config asks of it, is renamed to ``<name>.corrupt``
  (kept for inspection, replacing an older one) and the job stops with :class:`CorruptOutputError`, which
  names it and says to run snakemake again: the rerun sees the output missing and rebuilds it and what
  reads it.
* :func:`start_job` is what every rule script does first: its log, the leftovers of a killed run of the same
  job removed, and every input verified before anything reads it.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, NoReturn, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from actbridge.io import DIGESTS, SIDECAR_SUFFIX, TEMPORARY_SUFFIX, directory_files, sha256_file, sidecar_of
from actbridge.logs import log_to_file

log = logging.getLogger(__name__)

CORRUPT_SUFFIX = ".corrupt"
VERIFIED = "verified"  # the start of the line each job logs about its inputs (benchmarks/integrity_cost.py)
# Outputs verified by this process, with their stamp (each file's name, size and mtime): a job that verifies
# its inputs first and then reads them through the readers below hashes each once.
_verified: dict[Path, tuple] = {}


class CorruptOutputError(RuntimeError):
    """An upstream output that is not what its rule wrote; it has been moved aside to be rebuilt."""


def set_aside(path: str | os.PathLike[str], problem: str) -> str:
    """Move ``path`` (a file with its seal, or a whole directory) aside to ``<name>.corrupt``, replacing an
    older one; return the message that names it and what was wrong."""
    path = Path(path)
    aside = path.with_name(path.name + CORRUPT_SUFFIX)
    if aside.is_dir():
        shutil.rmtree(aside)
    if path.exists():
        os.replace(path, aside)
        seal = sidecar_of(path)
        if seal.exists():
            os.replace(seal, sidecar_of(aside))
        where = f"moved it to {aside}"
    else:
        where = "it is gone"
    _verified.pop(path.resolve(), None)
    return f"{path} {problem}; {where}"


def quarantine_all(problems: Mapping[str | os.PathLike[str], str]) -> NoReturn:
    """Set every path of ``problems`` aside and stop the job with one error naming them all, so that one rerun
    rebuilds every one."""
    lines = [set_aside(path, problem) for path, problem in problems.items()]
    if len(lines) == 1:
        raise CorruptOutputError(f"{lines[0]}: run snakemake again to rebuild it and everything that reads it")
    raise CorruptOutputError("\n".join(lines) + "\nRun snakemake again to rebuild them and everything that "
                             "reads them.")


def quarantine(path: str | os.PathLike[str], problem: str) -> NoReturn:
    """Move ``path`` aside to ``<name>.corrupt`` and stop the job with an error that names it."""
    quarantine_all({path: problem})


def seal_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with ``path`` against its seal, or ``None`` if every byte is what its job wrote."""
    path = Path(path)
    if path.is_dir():
        return _directory_problem(path)
    if not path.is_file():
        return "is missing"
    seal = sidecar_of(path)
    if not seal.is_file():
        return f"has no seal ({seal.name}: its job did not finish, or it was written by another tool)"
    expected = _parse_digests(seal.read_text(encoding="utf-8")).get(path.name)
    if expected is None:
        return f"is not listed in its seal {seal.name}"
    if sha256_file(path) != expected:
        return f"does not match the sha256 in {seal.name} (truncated or altered after its job wrote it)"
    return None


def _directory_problem(directory: Path) -> str | None:
    seal = directory / DIGESTS
    if not seal.is_file():
        return f"has no {DIGESTS} (its job did not finish, or it was written by another tool)"
    expected = _parse_digests(seal.read_text(encoding="utf-8"))
    present = set(directory_files(directory))
    missing = sorted(set(expected) - present)
    if missing:
        return f"lacks {missing} listed in its {DIGESTS}"
    extra = sorted(present - set(expected))
    if extra:
        return f"holds {extra}, which its job did not write"
    altered = [name for name, digest in sorted(expected.items()) if sha256_file(directory / name) != digest]
    if altered:
        return f"has {altered} that do not match the sha256 in its {DIGESTS} (truncated or altered)"
    return None


def _parse_digests(text: str) -> dict[str, str]:
    digests = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if name:
            digests[name] = digest
    return digests


def _stamp(path: Path) -> tuple:
    """What changes when a verified file or directory does (names, sizes, modification times): a cheap stat."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return tuple((p.as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def _problem_unless_verified(path: Path) -> str | None:
    key = path.resolve()
    if key in _verified and path.exists() and _verified[key] == _stamp(path):
        return None
    problem = seal_problem(path)
    if problem is None:
        _verified[key] = _stamp(path)
    return problem


def verify(path: str | os.PathLike[str]) -> Path:
    """``path``, after checking it against its seal; otherwise it is moved aside (:func:`quarantine`)."""
    path = Path(path)
    if (problem := _problem_unless_verified(path)) is not None:
        quarantine(path, problem)
    return path


def read_table(path: str | os.PathLike[str], schema: pa.Schema | None = None, *,
               columns: Sequence[str] | None = None) -> pa.Table:
    """A Parquet output another rule wrote, verified, parsed and (given ``schema``) of exactly that schema."""
    verify(path)
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as error:
        quarantine(path, f"is not readable Parquet ({error})")
    if schema is not None:
        expected = pa.schema([schema.field(name) for name in columns]) if columns else schema
        if not table.schema.equals(expected):
            quarantine(path, f"has an unexpected schema (written by another version?): {table.schema}")
    return table


def rows_problem(table: pa.Table, expected: Mapping[str, Iterable[Any]]) -> str | None:
    """Which combinations of ``expected`` (column -> values) no row of ``table`` holds, or ``None``."""
    keys = list(expected)
    present = set(zip(*(table.column(key).to_pylist() for key in keys))) if table.num_rows else set()
    wanted = list(itertools.product(*(sorted(set(values), key=repr) for values in expected.values())))
    missing = [combination for combination in wanted if combination not in present]
    if not missing:
        return None
    shown = ", ".join(str(dict(zip(keys, combination))) for combination in missing[:3])
    return (f"lacks {len(missing)} of the {len(wanted)} ({', '.join(keys)}) combinations the config asks for "
            f"(first: {shown})")


def remove_leftovers(output: str | os.PathLike[str]) -> list[Path]:
    """Remove what a killed run of the job that writes ``output`` left beside it (``.<name>.*.tmp``)."""
    output = Path(output)
    if not output.parent.is_dir():
        return []
    removed = []
    for leftover in output.parent.glob(f".{output.name}.*{TEMPORARY_SUFFIX}"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def start_job(snakemake: Any, *, unread: Sequence[str] = ()) -> None:
    """What every rule script does first: log to its rule log, remove the leftovers of a killed run of this job,
    and verify every input (files and directories) before anything reads it. ``unread`` names inputs the job
    only orders itself after and never opens (their hashing would be wasted)."""
    log_to_file(snakemake.log[0])
    for output in snakemake.output:
        for leftover in remove_leftovers(output):
            log.info("removed %s, left by a killed run of this job", leftover)
    skipped = {str(getattr(snakemake.input, name)) for name in unread if hasattr(snakemake.input, name)}
    problems = {}
    started, checked = time.perf_counter(), list(dict.fromkeys(str(path) for path in snakemake.input
                                                             if str(path) not in skipped))
    for path in checked:
        if (problem := _problem_unless_verified(Path(path))) is not None:
            problems[path] = problem
    if problems:
        quarantine_all(problems)
    log.info("%s %d inputs (%.1f MB) in %.2f s", VERIFIED, len(checked),
             sum(output_bytes(Path(path)) for path in checked) / 1e6, time.perf_counter() - started)


def output_bytes(path: Path) -> int:
    """The bytes of a file output, or of every file of a directory output."""
    return sum(size for _, size, _ in _stamp(path))



def sealed_outputs(results: str | os.PathLike[str]) -> list[Path]:
    """Every sealed output under ``results``: each directory with a ``SHA256SUMS`` (not looked into further) and
    each file with a sidecar outside those; ``.corrupt`` and temporary leftovers are not outputs."""
    results = Path(results)
    def leftover(path: Path) -> bool:
        return any(part.endswith((CORRUPT_SUFFIX, TEMPORARY_SUFFIX)) for part in path.relative_to(results).parts)

    directories = sorted(seal.parent for seal in results.rglob(DIGESTS) if not leftover(seal.parent))
    outputs = list(directories)
    for seal in sorted(results.rglob(f"*{SIDECAR_SUFFIX}")):
        path = seal.with_name(seal.name.removesuffix(SIDECAR_SUFFIX))
        if leftover(path) or any(parent in directories for parent in path.parents):
            continue
        outputs.append(path)
    return outputs


def verify_outputs(results: str | os.PathLike[str]) -> list[str]:
    """Check every sealed output under ``results``; move aside each that fails; return what was wrong."""
    failed = []
    for path in sealed_outputs(results):
        try:
            verify(path)
        except CorruptOutputError as error:
            failed.append(str(error))
    return failed
