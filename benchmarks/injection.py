"""Injection engine: the KV-cache fast path against a naive hooked full forward per condition.

    python benchmarks/injection.py [--shapes 160m 410m] [--conditions 12 48] [--examples 2]

Last-token injection into a random-init Pythia-shaped model (the pipeline's
compact 2-hop prompts with 4 distractor chains, about 48 tokens), K edit
conditions per example (the mix of add / add_rescaled / replace /
replace_rescaled / interpolate / none, cycled). Both paths return the
next-token distribution at the edited position for every condition; the
script checks they agree (max |Δ log-prob|) and prints the wall-time ratio
naive / fast beside the ideal K·T / (T − 1 + K) (token counts of the two
paths). Target: ≥ 80% of the ideal.
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

from actbridge.interventions import Edits, Example, fast_scores, naive_scores  # noqa: E402
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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    tokenizer, table = prompts(args.examples)
    examples = []
    for prompt in table.column("full_prompt").to_pylist():
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        examples.append(Example(ids, len(ids) - 1, [[]]))  # score the next-token distribution only
    tokens = float(np.mean([len(e.prompt_ids) for e in examples]))
    for shape in args.shapes:
        model = pythia_shaped(shape)
        d = model.config.hidden_size
        layer = model.config.num_hidden_layers // 2
        for k in args.conditions:
            generator = torch.Generator().manual_seed(k)
            edits = [edits_for(d, k, generator) for _ in examples]
            fast_s, fast = timed(lambda: fast_scores(model, examples, layer, edits), args.repeats)
            naive_s, naive = timed(lambda: naive_scores(model, examples, layer, edits), args.repeats)
            ideal = k * tokens / (tokens - 1 + k)
            ratio = naive_s / fast_s
            # the two paths must agree on the distribution they compute: compare their log-probs directly
            fast_lp = fast_logprobs(model, examples, layer, edits, fast=True)
            naive_lp = fast_logprobs(model, examples, layer, edits, fast=False)
            print(f"{shape} K={k:3d} T={tokens:.1f}: naive {naive_s:.2f} s, fast {fast_s:.2f} s, ratio {ratio:.1f}x, "
                  f"ideal {ideal:.1f}x, {ratio / ideal:.0%} of ideal; max |Δ log-prob| "
                  f"{np.abs(fast_lp - naive_lp).max():.1e}")


def fast_logprobs(model, examples, layer, edits, fast: bool) -> np.ndarray:
    """Log-probs of a fixed token (id 1) after the edited position, by both paths, via one-token candidates."""
    scored = [Example(e.prompt_ids, e.position, [[1]]) for e in examples]
    function = fast_scores if fast else naive_scores
    return np.stack([s.logprob for s in function(model, scored, layer, edits)])


if __name__ == "__main__":
    main()
