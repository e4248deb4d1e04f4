"""The registered conditions through the injection engine on a real pretrained model (planted answers).

    python benchmarks/probes/real_model_conditions.py MODEL_DIR [--layer L] [--examples N]

MODEL_DIR is a pipeline model directory (``results/models/receiver`` after ``make pretrained``: Gemma-3-270M,
262k vocabulary, BOS) or any directory ``actbridge.models.loading.load_model`` reads. On eval-like prompts from
the dataset generator, with b and the subspace drawn at random in the model's width, it checks what the
micro-model tests check, on a real architecture and tokenizer:

- the bounded engine (prefix cache, packed rows, chunked vocabulary) equals a whole-sequence forward for
  every registered condition, ``subspace_swap``'s projection and ``orthogonal_add``'s transform included;
- ``subspace_swap`` with k = width equals ``replace``, with k = 0 equals ``none``.

Prints the largest |Δ gold-candidate log-prob| of each check.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from actbridge.config import schema_default  # noqa: E402
from actbridge.data.worlds import DataConfig, iter_split_rows  # noqa: E402
from actbridge.injection.conditions import CONDITIONS, ConditionInputs, condition_labels  # noqa: E402
from actbridge.injection.conditions.subspace_swap import principal_directions  # noqa: E402
from actbridge.models.edited_scoring import Example, fast_scores, naive_scores  # noqa: E402
from actbridge.injection.jobs import build_edits  # noqa: E402
from actbridge.models.loading import load_for_job  # noqa: E402


def examples(handle, n: int) -> list[Example]:
    data = DataConfig(seed=0, hops=(1, 2), distractors=1, sizes={"eval": n}, template="english")
    rows = [row for row in iter_split_rows(data, "eval") if row["mode"] == "shared"][:n]
    prompts = handle.prompt_ids([row["receiver_prompt"] for row in rows])
    return [Example(ids, len(ids) - 1, handle.continuation_ids(row["candidates"][:3]))
            for ids, row in zip(prompts, rows)]


def largest_difference(first, second, rows_first, rows_second) -> float:
    return max(float(np.max(np.abs(a.logprob[rows_first] - b.logprob[rows_second]))) for a, b in zip(first, second))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--examples", type=int, default=4)
    args = parser.parse_args()
    handle = load_for_job(args.model_dir, "cpu", "float32")
    model, width = handle.model, handle.shape["hidden_size"]
    batch = examples(handle, args.examples)
    rng = np.random.default_rng(0)
    labels = condition_labels(list(CONDITIONS.names()), [0.5])
    names = [name for name, _ in labels]
    started = time.perf_counter()
    for k in (width, 0, 16):
        basis = principal_directions(rng.normal(size=(4 * width, width)) @ rng.normal(size=(width, width)), k)
        bound = {"subspace_swap": CONDITIONS["subspace_swap"]({"shared": basis})}
        edits = []
        for _ in batch:
            scale = 40.0  # residual norms of this order: an edit the model notices
            edits.append(build_edits(labels, ConditionInputs(
                rng.normal(size=width) * scale / np.sqrt(width) * 10, rng.normal(size=width), 
                (lambda v: v / np.linalg.norm(v))(rng.normal(size=width)), np.zeros(width),
                rng.normal(size=width) * scale / np.sqrt(width) * 10, "shared"), bound))
        fast = fast_scores(model, batch, args.layer, edits)
        naive = naive_scores(model, batch, args.layer, edits)
        swap = names.index("subspace_swap")
        print(f"k={k}: engine vs whole-sequence forward, every condition: max |Δ| "
              f"{largest_difference(fast, naive, slice(None), slice(None)):.2e}")
        if k in (width, 0):
            reference = names.index("replace" if k == width else "none")
            print(f"k={k}: subspace_swap vs {names[reference]}: max |Δ| "
                  f"{largest_difference(fast, fast, [swap], [reference]):.2e}; vs the other reference: "
                  f"{largest_difference(fast, fast, [swap], [names.index('none' if k == width else 'replace')]):.2e}")
    print(f"{model.config.model_type}, width {width}, vocabulary {model.config.get_text_config().vocab_size}, "
          f"layer {args.layer}, {len(batch)} examples x {len(labels)} edits; {time.perf_counter() - started:.0f} s; "
          f"batch_tokens default {schema_default('batch_tokens')}")


if __name__ == "__main__":
    main()
