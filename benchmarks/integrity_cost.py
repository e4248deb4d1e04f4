"""What the integrity checks cost in a finished run: the time each job spent verifying its inputs, summed,
against the jobs' own time; and the rate and time of checking every output at rest once.

    python benchmarks/integrity_cost.py [results] [logs]

Each job logs one line (`verified N inputs (X MB) in T s`, actbridge.integrity.start_job); Snakemake writes
each job's time to `results/benchmarks/**/*.tsv`. Local rules (figures, summaries) have no benchmark file,
so the ratio slightly overstates the share.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from actbridge.integrity import VERIFIED, output_bytes, seal_problem, sealed_outputs

LINE = re.compile(rf"{VERIFIED} (\d+) inputs \(([\d.]+) MB\) in ([\d.]+) s")


def main(results: Path, logs: Path) -> None:
    jobs, megabytes, seconds = 0, 0.0, 0.0
    for log in logs.rglob("*.log"):
        for match in LINE.finditer(log.read_text(errors="replace")):
            jobs, megabytes, seconds = jobs + 1, megabytes + float(match[2]), seconds + float(match[3])
    job_seconds = 0.0
    for tsv in (results / "benchmarks").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if len(lines) > 1:
            job_seconds += float(lines[1].split("\t")[0])
    outputs = sealed_outputs(results)
    total = sum(output_bytes(path) for path in outputs)
    start = time.perf_counter()
    failing = sum(seal_problem(path) is not None for path in outputs)
    at_rest = time.perf_counter() - start
    print(f"in the run: {jobs} jobs verified {megabytes:.0f} MB of inputs in {seconds:.1f} s "
          f"({megabytes / 1e3 / max(seconds, 1e-9):.2f} GB/s)")
    if job_seconds:
        print(f"summed job time {job_seconds:.0f} s: verification = {seconds / job_seconds:.2%} of it")
    print(f"at rest: {len(outputs)} sealed outputs, {total / 1e6:.0f} MB, checked once in {at_rest:.2f} s "
          f"({total / 1e9 / max(at_rest, 1e-9):.2f} GB/s), {failing} failing")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results"), Path(sys.argv[2] if len(sys.argv) > 2 else "logs"))
