"""Train several micro-model recipes side by side on one GPU, within a wall-clock budget.

How the shipped weights under ``resources/models/`` were searched for (see its
README). Every variant is trained by the pipeline's own code path
(:func:`actbridge.models.micro.build_micro_model`, the ``model`` rule's), so a
variant's output directory is exactly what the rule would build from the same
recipe and can be shipped with ``python -m actbridge ship``.

The step count of each variant is set from a short timing run made while all
variants run at once (so contention is included), to end before the budget;
it is then a fixed number in the recipe, as a config would state it.

``--data`` holds ``data/lm_train.parquet``, ``data/eval.parquet`` and
``models/tokenizer``. Make it with ``--prepare`` from the pipeline's
``results/``: it copies them without the ``*_span`` columns, which training
does not read and which the GPU image's pyarrow (25) misreads when pyarrow 26
wrote them.

The step counts: in the first sweep (8 variants on one H200) the real step
time was about twice the timing run's (evaluations, and all variants at full
speed at once), and 6 of 8 runs were cut; hence ``--fill`` (the fraction of the
remaining time planned for, 0.5 by default).

Usage::

    python benchmarks/probes/recipe_sweep.py --prepare results scratch/sweep-data
    python benchmarks/probes/recipe_sweep.py --data scratch/sweep-data \
        --variants benchmarks/probes/sweep_variants.json --budget 420 --out OUTDIR --workdir /tmp/sweep
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
try:  # the GPU image has no jsonschema; config validation is not used here
    import jsonschema  # noqa: F401
except ImportError:
    sys.modules["jsonschema"] = types.ModuleType("jsonschema")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from actbridge.models.handle import ModelHandle  # noqa: E402
from actbridge.models.scoring import score_answers  # noqa: E402
from actbridge.models.micro import build_micro_model, micro_recipe  # noqa: E402
from actbridge.models.micro_training import MicroModelConfig, tokenize_lm_split, train_micro_model  # noqa: E402

CALIBRATION_STEPS = 60
PART_BYTES = 15 * 2**20


def calibrated_steps(micro: dict, tokenizer, lm_train, device: str, seconds: float) -> int:
    """Steps that fit in ``seconds``, from the time of the last 40 of 60 steps (rounded down to 500)."""
    probe = MicroModelConfig.from_dict({**micro, "steps": CALIBRATION_STEPS, "eval_every": 20,
                                        "curriculum_steps": 0})
    _, history = train_micro_model(probe, tokenizer, lm_train.slice(0, 5000), device=device)
    per_step = (history[-1]["seconds"] - history[0]["seconds"]) / (CALIBRATION_STEPS - 20)
    steps = int(seconds / per_step) // 500 * 500
    return max(steps, 500), per_step


def eval_accuracy(model_dir: Path, eval_path: Path, device: str) -> dict:
    """Exact match on ``eval``: shared 1-hop and 2-hop, and the receiver's half of asymmetric 2-hop."""
    from transformers import AutoModelForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).to(device).eval()
    table = pq.read_table(eval_path).to_pylist()
    out = {}
    for name, mode, hops, side in [("shared_1hop", "shared", 1, "full"), ("shared_2hop", "shared", 2, "full"),
                                   ("asym_receiver_2hop", "asymmetric", 2, "receiver")]:
        rows = [r for r in table if r["mode"] == mode and r["hops"] == hops]
        with torch.inference_mode():
            scores = score_answers(ModelHandle.of(model, tokenizer), [r[f"{side}_prompt"] for r in rows],
                                   [r["answer"] for r in rows], [r["candidates"] for r in rows], device=device)
        out[name] = round(float(np.mean(scores.exact_match)), 4)
    return out


def run_variant(name: str, spec: dict, args: argparse.Namespace) -> None:
    """One variant in its own process: calibrate, train by the model rule's code, evaluate."""
    torch.set_num_threads(args.threads)
    work = Path(args.workdir) / name
    work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=work / "train.log", level=logging.INFO, format="%(asctime)s %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = Path(args.data)
    tokenizer_dir = data / "models" / "tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    lm_train = pq.read_table(data / "data" / "lm_train.parquet")
    started = time.time()
    tokenize_lm_split(lm_train.slice(0, 5000), tokenizer, loss_on=spec["micro"].get("loss_on", "questions"))
    # the model rule tokenizes lm_train twice (both curriculum phases) before its first step
    tokenize_s = 2 * (time.time() - started) * lm_train.num_rows / 5000
    remaining = args.deadline - time.time() - args.reserve - tokenize_s
    steps, per_step = calibrated_steps(spec["micro"], tokenizer, lm_train, device, args.fill * remaining)
    micro = {**spec["micro"], "steps": steps}
    (work / "plan.json").write_text(json.dumps({"steps": steps, "seconds_per_step": per_step,
                                               "tokenize_s_estimate": tokenize_s,
                                               "calibration_s": time.time() - started}))
    recipe = micro_recipe(micro, spec["lm_train"], spec["tokenizer"])
    build_micro_model(work / "model", recipe, tokenizer_dir=tokenizer_dir,
                      lm_train_path=data / "data" / "lm_train.parquet", shipped_root=None, device=device)
    result = {"variant": name, "micro": micro, **eval_accuracy(work / "model", data / "data" / "eval.parquet", device)}
    (work / "result.json").write_text(json.dumps(result))


def prepare(results: Path, data: Path) -> None:
    """Copy what the sweep reads from the pipeline's ``results/``, without the span columns."""
    import shutil
    for split in ("lm_train", "eval"):
        table = pq.read_table(results / "data" / f"{split}.parquet")
        (data / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(table.select([c for c in table.column_names if not c.endswith("_span")]),
                       data / "data" / f"{split}.parquet", compression="zstd")
    shutil.copytree(results / "models" / "tokenizer", data / "models" / "tokenizer", dirs_exist_ok=True)


def collect(workdir: Path) -> str:
    """Every variant's plan, training progress and result, as text."""
    lines = []
    for work in sorted(p for p in workdir.iterdir() if p.is_dir()):
        for file in ("plan.json", "result.json"):
            if (work / file).exists():
                lines.append(f"{work.name} {file}: {(work / file).read_text()}")
        if (work / "train.log").exists():
            lines += [f"{work.name} {line}" for line in (work / "train.log").read_text().splitlines()
                      if " train " in line or "WARNING" in line or "Error" in line]
    return "\n".join(lines) + "\n"


def pack(model_dirs: list[Path], out: Path) -> None:
    """The chosen model directories as one tar, split in parts under the transfer limit."""
    archive = out.parent / "models.tar"
    with tarfile.open(archive, "w") as tar:
        for model_dir in model_dirs:
            tar.add(model_dir, arcname=model_dir.parent.name)
    data = archive.read_bytes()
    for i in range(0, len(data), PART_BYTES):
        (out / f"models.tar.part{i // PART_BYTES}").write_bytes(data[i: i + PART_BYTES])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="results")
    parser.add_argument("--prepare", nargs=2, metavar=("RESULTS", "DATA"),
                        help="copy the sweep's inputs from the pipeline's results/ and exit")
    parser.add_argument("--variants")
    parser.add_argument("--budget", type=float, help="seconds for the whole sweep")
    parser.add_argument("--fill", type=float, default=0.5,
                        help="fraction of the remaining time a variant's steps are planned for")
    parser.add_argument("--reserve", type=float, default=60.0, help="seconds kept for evaluation and packing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    parser.add_argument("--workdir", default="/tmp/sweep")
    parser.add_argument("--pack", type=int, default=2, help="how many best variants to bring back")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(Path(args.prepare[0]), Path(args.prepare[1]))
        return
    if not (args.variants and args.budget and args.out):
        parser.error("--variants, --budget and --out are required for a sweep")
    variants = json.loads(Path(args.variants).read_text())
    if args.one:
        run_variant(args.one, variants[args.one], args)
        return
    out, workdir = Path(args.out), Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget
    children = {name: subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--one", name,
                                        "--deadline", str(deadline)],
                                       stdout=open(workdir / f"{name}.out", "w"), stderr=subprocess.STDOUT)
                for name in variants}
    while any(c.poll() is None for c in children.values()) and time.time() < deadline + 30:
        time.sleep(15)
        (out / "progress.txt").write_text(collect(workdir))
    for name, child in children.items():
        if child.poll() is None:
            child.kill()
        print(name, "exit", child.returncode, (workdir / f"{name}.out").read_text()[-1500:], flush=True)
    (out / "progress.txt").write_text(collect(workdir))
    results = [json.loads((workdir / n / "result.json").read_text()) for n in variants
               if (workdir / n / "result.json").exists()]
    print(json.dumps(results, indent=1))
    # bring back the variants that compose best on shared 2-hop, one per role where named so
    best = []
    for role in sorted({variants[r["variant"]].get("role", "any") for r in results}):
        ranked = sorted((r for r in results if variants[r["variant"]].get("role", "any") == role),
                        key=lambda r: -r["shared_2hop"])
        best += ranked[: max(1, args.pack // 2)]
    pack([workdir / r["variant"] / "model" for r in best], out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
