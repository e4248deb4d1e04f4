"""The Pythia profile end to end on random-init models of Pythia's shapes, over a small slice.

    python benchmarks/pythia_shapes.py [--workdir DIR] [--eval 8] [--bridge-train 48] [--pairs ends]

The real weights need the model hub; random-init GPT-NeoX models with Pythia-160M's and
-410M's shapes (12 x 768 and 24 x 1024, vocabulary 50,304) prove that every stage handles
the real dimensions. They are saved as local directories (the `path:` model route) with a
BPE tokenizer trained here on English-template prompts, and `config/pythia.yaml` runs on
them with only the slice changed: data sizes, one bridge seed, and the layer pairs.

Printed: the per-job wall time of each stage from Snakemake's benchmark files, and the
profile's own job counts from `actbridge.plan`, so that a stage's time on this machine for
the whole profile can be read as (time per job) x (jobs) x (rows ratio).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from extraction import pythia_shaped  # noqa: E402

from actbridge.data.worlds import DataConfig, build_split  # noqa: E402
from actbridge.models.tokenizer import train_bpe_tokenizer  # noqa: E402

COPIED = ("workflow", "config", "profiles", "src")
PAIRS = {"ends": [[0, 0], [6, 12], [12, 24]], "relative_depth": "relative_depth"}


def save_random_models(weights: Path) -> dict[str, str]:
    """Random-init 160M- and 410M-shaped models with one shared tokenizer, as `path:` model specs."""
    config = DataConfig(seed=5, hops=(1, 2), distractors=3, template="english",
                        sizes={"lm_train": 600, "bridge_train": 1, "bridge_val": 1, "eval": 1})
    tokenizer = train_bpe_tokenizer(build_split(config, "lm_train").column("full_prompt").to_pylist(), vocab_size=4096)
    paths = {}
    for side, shape in (("sender", "160m"), ("receiver", "410m")):
        target = weights / side
        pythia_shaped(shape).save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        paths[side] = str(target)
    return paths


def slice_config(paths: dict[str, str], args: argparse.Namespace) -> dict:
    config = yaml.safe_load((ROOT / "config" / "pythia.yaml").read_text())
    config["models"] = {side: {"path": path} for side, path in paths.items()}
    config["device"], config["dtype"] = "cpu", "float32"
    config["data"]["sizes"] = {"lm_train": 50, "bridge_train": args.bridge_train,
                               "bridge_val": max(8, args.bridge_train // 4), "eval": args.eval}
    config.setdefault("bridge", {}).update({"seeds": 1, "pairs": PAIRS[args.pairs]})
    return config


def stage_times(results: Path) -> dict[str, list[float]]:
    """Wall seconds of every benchmarked job, by stage (the first folder under results/benchmarks)."""
    times: dict[str, list[float]] = defaultdict(list)
    for path in sorted((results / "benchmarks").rglob("*.tsv")):
        with path.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        stage = path.relative_to(results / "benchmarks").parts[0]
        if stage == "activations":
            stage = f"activations {path.parent.name}"
        times[stage].append(float(row["s"]))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards (default: a temporary one)")
    parser.add_argument("--eval", type=int, default=8, help="eval worlds (rows: 1.5 x with asymmetric 2-hop)")
    parser.add_argument("--bridge-train", type=int, default=48, help="bridge_train worlds")
    parser.add_argument("--pairs", choices=sorted(PAIRS), default="ends", help="'ends': s0-r0, s6-r12, s12-r24")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="actbridge-pythia-"))
    if workdir.exists() and any(workdir.iterdir()):
        sys.exit(f"{workdir} is not empty")
    for name in COPIED:
        shutil.copytree(ROOT / name, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
    started = time.perf_counter()
    paths = save_random_models(workdir / "weights")
    print(f"random-init models saved in {time.perf_counter() - started:.0f} s")
    config_path = workdir / "pythia_slice.yaml"
    config_path.write_text(yaml.safe_dump(slice_config(paths, args)))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", str(config_path), "--cores",
                             str(args.cores)], cwd=workdir, capture_output=True, text=True)
    total = time.perf_counter() - started
    if result.returncode != 0:
        print((result.stdout + result.stderr)[-5000:])
        return 1
    print(f"\nPythia-shaped slice ({args.eval} eval worlds, {args.bridge_train} bridge_train worlds, pairs "
          f"{args.pairs}, 1 seed), {args.cores} cores: whole workflow {total:.0f} s\n")
    print("| stage | jobs | s per job (mean) | s per job (max) | s in all |\n|---|---|---|---|---|")
    for stage, seconds in stage_times(workdir / "results").items():
        print(f"| {stage} | {len(seconds)} | {sum(seconds) / len(seconds):.1f} | {max(seconds):.1f} | "
              f"{sum(seconds):.0f} |")
    plan = subprocess.run([sys.executable, "-m", "actbridge.plan", "--configfile", str(config_path),
                           "--results", str(workdir / "results")], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""})
    print("\nThe slice as actbridge.plan counts it:\n" + plan.stdout + plan.stderr)
    print(f"workdir: {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
