"""How long Snakemake takes to plan a run once the models exist: the DAG reads layer counts from each
model's ``model.json``, never the weights (a GGUF file is parsed whole in 5-18 s on 2 cores).

    python benchmarks/dag_time.py [--configfile config/pretrained.yaml] [--repeats 3]

Run it in a checkout where the configured models have been built (``make pretrained`` or any run past the
model checkpoint). Prints the best wall time of ``snakemake -n --forcerun bridge`` (every job after the
models planned, so every input function resolves the layer pairs), of ``snakemake --version`` (the
interpreter and Snakemake's own import: the floor), and the planning time above that floor against the
10 s target.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def best_of(command: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/pretrained.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    snakemake = [sys.executable, "-m", "snakemake"]
    floor = best_of([*snakemake, "--version"], args.repeats)
    plan = best_of([*snakemake, "-n", "--configfile", args.configfile, "--forcerun", "bridge"], args.repeats)
    print(f"snakemake --version: {floor:.1f} s; snakemake -n ({args.configfile}, every job after the models): "
          f"{plan:.1f} s; planning above the floor {plan - floor:.1f} s; target <= 10 s: "
          f"{'met' if plan <= 10 else 'NOT met'} ({plan / 10:.2f} of it)")


if __name__ == "__main__":
    main()
