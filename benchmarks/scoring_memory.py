"""Answer scoring on a large-vocabulary model: peak memory against the weights, and cost against the ideal.

    python benchmarks/scoring_memory.py --model results/models/receiver [--examples 64] [--shots 1]
           [--naive-batch 8] [--threads 2]

``--model`` is a pipeline model directory (``make pretrained`` leaves Gemma-3-270M, vocabulary 262,144, at
``results/models/receiver``). Prompts are the pretrained profile's (``english`` template, 1 distractor,
``--shots`` demonstrations), each with its candidates. Every measurement runs in a fresh process, so each
peak RSS is its own:

* **bounded**: ``actbridge.models.scoring.score_answers`` (the prompt once per example, its key/value cache
  shared by every candidate, the vocabulary projected only where an answer token is predicted, batches of
  ``batch_tokens``), at N and 4N examples: peak RSS against the weights' size (float32), which must stay
  within weights + 2 GB and flat in N.
* **naive**: ``naive_answer_scores`` (each whole prompt + candidate through the model's forward, a
  log-softmax over the full vocabulary at every position), ``--naive-batch`` rows a batch: its peak RSS.
* **ideal**: one trunk pass over each example's prompt followed by all its candidates' tokens (batched in
  4,096 tokens, as the bounded path), and the output head at the positions that predict a candidate token:
  one prompt pass plus the candidates' tokens, the least work that scores every candidate.

Prints bounded / ideal wall time (target <= 1.2) and naive / bounded, and the largest |Δ gold log-prob|
between bounded and naive (must be < 1e-4).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def examples(n: int, shots: int):
    from actbridge.data.worlds import DataConfig, build_split

    config = DataConfig(seed=5, hops=(1, 2), distractors=1, context_modes=("shared",), template="english",
                        shots=shots, sizes={"eval": n})
    rows = build_split(config, "eval").to_pylist()
    return ([r["full_prompt"] for r in rows], [r["answer"] for r in rows], [r["candidates"] for r in rows])


def measure(args) -> dict:
    """One measurement in this process: wall time, peak RSS and gold log-probs."""
    import numpy as np
    import torch

    from actbridge.models.encoding import continuation_ids, prompt_token_ids, with_gold
    from actbridge.models.scoring import naive_answer_scores, score_answers
    from actbridge.models.heads import token_scores
    from actbridge.models.loading import load_for_job

    handle = load_for_job(args.model, "cpu", "float32", args.threads)
    model, tokenizer = handle.model, handle.tokenizer
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    prompts, answers, candidates = examples(args.examples, args.shots)
    started = time.perf_counter()
    if args.mode == "bounded":
        logprob = score_answers(handle, prompts, answers, candidates).gold_logprob
    elif args.mode == "naive":
        logprob = naive_answer_scores(handle, prompts, answers, candidates,
                                      batch_size=args.naive_batch).gold_logprob
    else:  # ideal: prompt then every candidate's tokens in one sequence, the head where a candidate token is predicted
        from actbridge.models.padding import right_padded

        logprob = np.zeros(len(prompts))
        rows = []
        for prompt_ids, answer, names in zip(prompt_token_ids(tokenizer, prompts), answers, candidates):
            tails = continuation_ids(tokenizer, with_gold(names, answer)[0])
            rows.append((prompt_ids + [t for tail in tails for t in tail],
                         [len(prompt_ids) - 1 + j for tail in tails for j in range(len(tail))],
                         [t for tail in tails for t in tail]))
        per_batch = max(1, 4096 // max(len(ids) for ids, _, _ in rows))  # batched as the bounded path is
        with torch.inference_mode():
            for begin in range(0, len(rows), per_batch):
                batch = rows[begin:begin + per_batch]
                ids, mask = right_padded([r[0] for r in batch], 0)
                final = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
                row_index = torch.tensor([n for n, r in enumerate(batch) for _ in r[1]])
                position = torch.tensor([p for r in batch for p in r[1]])
                targets = torch.tensor([t for r in batch for t in r[2]])
                token_scores(model, final[row_index, position], torch.arange(len(targets)), targets)
    seconds = time.perf_counter() - started
    return {"mode": args.mode, "examples": args.examples, "seconds": seconds, "weights_mb": weights_mb,
            "loaded_mb": loaded_mb, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "vocab": int(model.get_output_embeddings().weight.shape[0]), "logprob": [float(x) for x in logprob]}


def run(mode: str, examples_n: int, args) -> dict:
    command = [sys.executable, __file__, "--model", args.model, "--examples", str(examples_n), "--shots",
               str(args.shots), "--naive-batch", str(args.naive_batch), "--threads", str(args.threads),
               "--measure", mode]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="results/models/receiver")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--naive-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        args.mode = args.measure
        print(json.dumps(measure(args)))
        return
    bounded = run("bounded", args.examples, args)
    bounded_4x = run("bounded", 4 * args.examples, args)
    naive = run("naive", args.examples, args)
    ideal = run("ideal", args.examples, args)
    import numpy as np

    gap = float(np.max(np.abs(np.array(bounded["logprob"]) - np.array(naive["logprob"]))))
    weights = bounded["weights_mb"]
    print(f"model {args.model}: vocabulary {bounded['vocab']:,}, float32 weights {weights:,.0f} MB, "
          f"{args.examples} examples ({args.shots} shot), {args.threads} threads")
    print(f"{'path':<22}{'examples':>9}{'wall s':>9}{'peak RSS MB':>13}{'over weights MB':>17}")
    for name, row in (("bounded", bounded), ("bounded (4x examples)", bounded_4x),
                      (f"naive (batch {args.naive_batch})", naive), ("ideal", ideal)):
        print(f"{name:<22}{row['examples']:>9}{row['seconds']:>9.1f}{row['peak_mb']:>13,.0f}"
              f"{row['peak_mb'] - weights:>17,.0f}")
    print(f"bounded peak - weights: {bounded['peak_mb'] - weights:,.0f} MB at N, "
          f"{bounded_4x['peak_mb'] - weights:,.0f} MB at 4N (target <= 2,048 MB, flat)")
    print(f"bounded / ideal wall time: {bounded['seconds'] / ideal['seconds']:.2f} (target <= 1.2)")
    print(f"naive / bounded wall time: {naive['seconds'] / bounded['seconds']:.2f}; "
          f"naive peak / bounded peak: {naive['peak_mb'] / bounded['peak_mb']:.2f}")
    print(f"max |Δ gold log-prob| bounded vs naive: {gap:.2e} (must be < 1e-4)")


if __name__ == "__main__":
    main()
