"""Injection engine: the KV-cache fast path against a naive hooked full forward per condition.

    python benchmarks/injection.py [--shapes 160m 410m] [--conditions 12 48] [--examples 2]
                                   [--candidates 1] [--candidate-tokens 1]

Last-token injection into a random-init Pythia-shaped model (the pipeline's
compact 2-hop prompts with 4 distractor chains, about 48 tokens), K edit
conditions per example (the mix of add / add_rescaled / replace /
replace_rescaled / interpolate / none, cycled), C candidate answers of m
tokens each. Both paths score every candidate under every condition; the
script checks they agree (max |Δ log-prob|) and prints the wall-time ratio
naive / fast beside the ideal, the ratio of the tokens each path runs:
naive K·C·(T + m) (every candidate after the whole prompt, per condition),
fast (T − 1) + K·(1 + C·(m − 1)) (the prefix once, the edited token once
per condition, each candidate's tokens but the last once per condition).
With C = m = 1 that is K·(T + 1) / (T − 1 + K). Target: >= 80% of the ideal.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from actbridge.models.edited_scoring import Edits, Example, fast_scores, naive_scores  # noqa: E402
from extraction import prompts, pythia_shaped  # noqa: E402


def edits_for(d: int, k: int, generator: torch.Generator) -> Edits:
    vector = torch.randn(d, generator=generator)
    unit = vector / vector.norm()
    kinds = [(1.0, 0 * vector, False), (1.0, 0.5 * vector, False), (1.0, 0.5 * unit, True),
             (0.0, vector, False), (0.0, unit, True), (0.7, 0.3 * vector, False)]
    chosen = [kinds[i % len(kinds)] for i in range(k)]
    return Edits(torch.tensor([c[0] for c in chosen]), torch.stack([c[1] for c in chosen]),
                 torch.tensor([c[2] for c in chosen]))


def timed(function, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["160m", "410m"])
    parser.add_argument("--conditions", nargs="+", type=int, default=[12, 48])
    parser.add_argument("--examples", type=int, default=2, help="examples per call (one shared prefix batch)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--candidates", type=int, default=1, help="candidate answers per example (C)")
    parser.add_argument("--candidate-tokens", type=int, default=1, help="tokens per candidate (m)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, {args.dtype}")
    tokenizer, table = prompts(args.examples)
    c, m = args.candidates, args.candidate_tokens
    candidates = [[1 + (i * m + j) % 1000 for j in range(m)] for i in range(c)]  # distinct ids, fixed
    examples = []
    for prompt in table.column("full_prompt").to_pylist():
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        examples.append(Example(ids, len(ids) - 1, candidates))
    tokens = float(np.mean([len(e.prompt_ids) for e in examples]))
    print(f"C={c} candidates of m={m} tokens")
    for shape in args.shapes:
        model = pythia_shaped(shape).to(device=args.device, dtype=getattr(torch, args.dtype))
        d = model.config.hidden_size
        layer = model.config.num_hidden_layers // 2
        for k in args.conditions:
            generator = torch.Generator().manual_seed(k)
            edits = [edits_for(d, k, generator) for _ in examples]
            fast_s, fast = timed(lambda: fast_scores(model, examples, layer, edits), args.repeats)
            naive_s, naive = timed(lambda: naive_scores(model, examples, layer, edits), args.repeats)
            ideal = k * c * (tokens + m) / (tokens - 1 + k * (1 + c * (m - 1)))
            ratio = naive_s / fast_s
            difference = max(np.abs(a.logprob - b.logprob).max() for a, b in zip(fast, naive))
            print(f"{shape} K={k:3d} T={tokens:.1f}: naive {naive_s:.2f} s, fast {fast_s:.2f} s, ratio {ratio:.1f}x, "
                  f"ideal {ideal:.1f}x, {ratio / ideal:.0%} of ideal; max |Δ log-prob| {difference:.1e}")


if __name__ == "__main__":
    main()
