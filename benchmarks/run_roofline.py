"""A finished run's model-running jobs against this machine's matmul roofline, at the run's own models and dtype.

    python benchmarks/run_roofline.py [--results results] [--configfile config/qwen.yaml] [--seconds 3]

For each extraction, accuracy and injection job of the run (``results/benchmarks/*.tsv``: wall seconds):

* the work it could not avoid, in tokens: extraction, every distinct prompt it reads once; accuracy, each
  scored prompt plus its candidates' tokens but the last; injection, the receiver's prompt once per row,
  the full-context prompt once more where ``self_patch`` needs it, and per condition edit the injected token
  plus the candidates' tokens but the last (the prefix before the edit is shared through the KV cache);
* that work's FLOPs (2 x the trunk's matmul parameters per token, plus attention over the prompt; the LM
  head only where an answer token is scored);
* its GFLOP/s against the GFLOP/s of the model's MLP up-projection (``F.linear``, [tokens of one batch, d] x
  [ffn, d]^T) measured here in the run's dtype on the job's thread count: the ratio is how close the job,
  Parquet, sha256 and scheduling included, came to the machine's limit.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import polars as pl  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from transformers import AutoConfig, AutoTokenizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction import matmul_roofline  # noqa: E402


def shape_of(weights: Path) -> dict:
    config = AutoConfig.from_pretrained(weights).get_text_config()
    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    ffn = config.intermediate_size
    per_layer = hidden * heads * head_dim * 2 + hidden * kv * 2 + 3 * hidden * ffn  # q, o, k, v, gate/up/down
    return {"layers": layers, "hidden": hidden, "ffn": ffn, "attn": heads * head_dim, "vocab": config.vocab_size,
            "matmul_params": layers * per_layer}


def flops(shape: dict, tokens: float, context: float, scored: float = 0.0) -> float:
    """Forward FLOPs of ``tokens`` tokens attending to ``context`` positions, ``scored`` of them through the head."""
    return (2 * shape["matmul_params"] * tokens + 4 * shape["layers"] * shape["attn"] * context * tokens
            + 2 * shape["hidden"] * shape["vocab"] * scored)


def roofline(shape: dict, dtype: torch.dtype, threads: int, tokens: int = 512, seconds: float = 3.0) -> float:
    torch.set_num_threads(threads)
    return matmul_roofline(tokens, shape["hidden"], dtype, seconds, ffn=shape["ffn"])


def seconds_of(tsv: Path) -> float:
    with open(tsv, encoding="utf-8") as handle:
        return float(next(csv.DictReader(handle, delimiter="\t"))["s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--configfile", type=Path, default=Path("config/qwen.yaml"))
    parser.add_argument("--threads", type=int, default=1, help="threads of the run's model jobs")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    config = yaml.safe_load(args.configfile.read_text())
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[config.get("dtype", "float32")]
    results, bench = args.results, args.results / "benchmarks"
    rows = []
    for model, column in (("sender", "sender_prompt"), ("receiver", "full_prompt")):
        weights = results / "models" / model / "weights"
        shape, tokenizer = shape_of(weights), AutoTokenizer.from_pretrained(weights)
        peak = roofline(shape, dtype, args.threads, seconds=args.seconds)

        def length(texts):
            return [len(ids) for ids in tokenizer(list(texts))["input_ids"]]

        for split in ("bridge_train", "bridge_val", "eval"):
            tsv = bench / "activations" / model / f"{split}.tsv"
            if not tsv.is_file():
                continue
            lengths = length(pl.read_parquet(results / "data" / f"{split}.parquet")[column].unique())
            work = sum(flops(shape, n, n / 2) for n in lengths)
            rows.append((f"activations {model} {split}", len(lengths), sum(lengths), seconds_of(tsv), work, peak))
        eval_table = pl.read_parquet(results / "data" / "eval.parquet")
        prompt_column = "sender_prompt" if model == "sender" else "receiver_prompt"
        candidate_tokens = [sum(n - 1 for n in length(" " + c for c in candidates))
                            for candidates in eval_table["candidates"]]
        prompts = length(eval_table[prompt_column])
        tsv = bench / "models" / f"accuracy_{model}.tsv"
        if tsv.is_file():
            work = sum(flops(shape, n + c, n + c / 2, scored=1 + c) for n, c in zip(prompts, candidate_tokens))
            rows.append((f"accuracy {model}", len(prompts), sum(prompts), seconds_of(tsv), work, peak))
        if model != "receiver":
            continue
        conditions = config["injection"].get("conditions")
        alphas = len(config["injection"].get("alphas", []))
        scaled = {"add", "add_rescaled", "interpolate", "random", "shuffled", "orthogonal_add"}
        edits = sum(alphas if c in scaled else 1 for c in conditions if c != "self_patch")
        full = length(eval_table["full_prompt"])
        for tsv in sorted((bench / "injection").glob("*/*/seed*.tsv")):
            work = 0.0
            for n, f, c, receiver_prompt, full_prompt in zip(prompts, full, candidate_tokens,
                                                               eval_table["receiver_prompt"], eval_table["full_prompt"]):
                work += flops(shape, n, n / 2) + edits * flops(shape, 1 + c, n, scored=1 + c)
                if "self_patch" in conditions and receiver_prompt != full_prompt:
                    work += flops(shape, f, f / 2) + flops(shape, 1 + c, n, scored=1 + c)
            label = "injection " + "/".join(tsv.relative_to(bench / "injection").with_suffix("").parts)
            rows.append((label, len(prompts), sum(prompts), seconds_of(tsv), work, peak))
    print(f"dtype {config.get('dtype', 'float32')}, {args.threads} thread(s) per job\n")
    print("| job | prompts | prompt tokens | seconds | GFLOP of unavoidable work | achieved GFLOP/s | "
          "matmul roofline GFLOP/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for label, prompts_n, tokens, seconds, work, peak in rows:
        print(f"| {label} | {prompts_n} | {tokens} | {seconds:.0f} | {work / 1e9:.0f} | {work / seconds / 1e9:.1f} | "
              f"{peak:.1f} | {work / seconds / 1e9 / peak:.2f} |")
    print(json.dumps([{"job": r[0], "seconds": r[3], "ratio": r[4] / r[3] / 1e9 / r[5]} for r in rows]))


if __name__ == "__main__":
    main()
