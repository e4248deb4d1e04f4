"""Activation extraction against the machine's matmul roofline, and its peak memory for N and 8N examples.

    python benchmarks/extraction.py [--shape 410m] [--examples 16] [--dtypes float32 bfloat16]

Model: random-init GPT-NeoX with Pythia-410M's (or -160M's) shape, saved and
loaded through the pipeline's own loader. Prompts: the pipeline's 2-hop
compact prompts with 4 distractor chains (about 48 tokens), tokenized by a
BPE tokenizer trained here (the real Pythia tokenizer needs the hub).

Printed, per dtype:
* tokens/s of `extract_activations` (every layer, roles last + bridge,
  float32 shards), Parquet writing and sha256 included;
* achieved GFLOP/s: 2 x (matmul parameters) + attention FLOPs per token;
* the roofline: GFLOP/s of the MLP's up-projection (F.linear, [tokens of one
  batch, d] x [4d, d]^T) in the same process, dtype and threads;
* their ratio (target >= 0.8).
Then the peak RSS of a fresh process extracting N and 8N examples (float32):
flat if memory does not grow with the number of examples.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

from actbridge.models.handle import ModelHandle  # noqa: E402
from actbridge.activations.store import ExtractionPlan, extract_activations  # noqa: E402
from actbridge.data.worlds import DataConfig, build_split  # noqa: E402
from actbridge.models.loading import load_model  # noqa: E402
from actbridge.models.tokenizer import train_bpe_tokenizer  # noqa: E402

SHAPES = {  # layers, hidden, heads (ffn = 4 x hidden), as in tests/test_models.py
    "160m": (12, 768, 12),
    "410m": (24, 1024, 16),
}
BATCH = 16


def pythia_shaped(shape: str) -> GPTNeoXForCausalLM:
    layers, hidden, heads = SHAPES[shape]
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=4 * hidden, use_parallel_residual=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                            "partial_rotary_factor": 0.25},
                           max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(config).eval()


def prompts(n_examples: int):
    config = DataConfig(seed=11, hops=(2,), distractors=4, context_modes=("shared",),
                        sizes={"lm_train": 400, "bridge_train": n_examples, "bridge_val": 1, "eval": 1})
    lm_train = build_split(config, "lm_train")
    tokenizer = train_bpe_tokenizer(lm_train.column("full_prompt").to_pylist(), vocab_size=2048)
    return tokenizer, build_split(config, "bridge_train")


def trunk_flops_per_token(model: GPTNeoXForCausalLM, tokens_per_prompt: float) -> float:
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    matmul_params = layers * (4 * hidden * hidden + 2 * hidden * model.config.intermediate_size)
    attention = layers * 4 * tokens_per_prompt * hidden  # scores and mixing
    return 2 * matmul_params + attention


def matmul_roofline(tokens: int, hidden: int, dtype: torch.dtype, seconds: float = 3.0, ffn: int | None = None) -> float:
    """GFLOP/s of the MLP's up-projection ([tokens, hidden] x [ffn, hidden]^T, ffn = 4 x hidden unless given) done the
    way nn.Linear does it (F.linear picks the dtype's kernel)."""
    ffn = ffn or 4 * hidden
    a = torch.randn(tokens, hidden, dtype=dtype)
    weight = torch.randn(ffn, hidden, dtype=dtype)
    with torch.inference_mode():
        for _ in range(3):
            torch.nn.functional.linear(a, weight)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            torch.nn.functional.linear(a, weight)
            count += 1
    return 2 * tokens * hidden * ffn * count / (time.perf_counter() - started) / 1e9


def throughput(model_dir: Path, shape: str, n_examples: int, dtype_name: str) -> dict:
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    model = load_model(model_dir, device="cpu", dtype=dtype)
    tokenizer, table = prompts(n_examples)
    lengths = [len(ids) for ids in tokenizer(table.column("full_prompt").to_pylist(),
                                               add_special_tokens=False)["input_ids"]]
    plan = ExtractionPlan(layers=tuple(range(model.config.num_hidden_layers + 1)), roles=("last", "bridge"),
                          prompt="full", dtype="float32", shard_rows=2 * BATCH * 4, batch_size=BATCH)
    with tempfile.TemporaryDirectory() as out:
        extract_activations(ModelHandle.of(model, tokenizer), table.slice(0, BATCH), plan=plan, out_dir=Path(out) / "warm",
                            identity={"bench": shape})
        started = time.perf_counter()
        extract_activations(ModelHandle.of(model, tokenizer), table, plan=plan, out_dir=Path(out) / "acts", identity={"bench": shape})
        elapsed = time.perf_counter() - started
    tokens = sum(lengths)
    achieved = trunk_flops_per_token(model, sum(lengths) / len(lengths)) * tokens / elapsed / 1e9
    roofline = matmul_roofline(BATCH * round(sum(lengths) / len(lengths)), model.config.hidden_size, dtype)
    return {"shape": shape, "dtype": dtype_name, "examples": n_examples, "mean_tokens": sum(lengths) / len(lengths),
            "seconds": elapsed, "tokens_per_s": tokens / elapsed, "gflops": achieved, "roofline_gflops": roofline,
            "fraction_of_roofline": achieved / roofline}


def peak_rss_child(model_dir: str, shape: str, n_examples: int) -> None:
    model = load_model(model_dir, device="cpu", dtype=torch.float32)
    tokenizer, table = prompts(n_examples)
    plan = ExtractionPlan(layers=tuple(range(model.config.num_hidden_layers + 1)), roles=("last", "bridge"),
                          prompt="full", dtype="float32", shard_rows=2 * BATCH * 2, batch_size=BATCH)
    with tempfile.TemporaryDirectory() as out:
        extract_activations(ModelHandle.of(model, tokenizer), table, plan=plan, out_dir=Path(out) / "acts", identity={"bench": shape})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"examples": n_examples, "peak_rss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="410m")
    parser.add_argument("--examples", type=int, default=16, help="N: examples for throughput and the small RSS run")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rss-child", nargs=2, metavar=("MODEL_DIR", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        peak_rss_child(args.rss_child[0], args.shape, int(args.rss_child[1]))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        pythia_shaped(args.shape).save_pretrained(model_dir, safe_serialization=True)
        (model_dir / "model.json").write_text(json.dumps({"kind": "micro"}))  # load through the pipeline's loader
        for dtype_name in args.dtypes:
            result = throughput(model_dir, args.shape, args.examples * 4, dtype_name)
            print(f"extract {args.shape} {dtype_name}: {result['tokens_per_s']:.0f} tokens/s, "
                  f"{result['gflops']:.1f} GFLOP/s vs matmul roofline {result['roofline_gflops']:.1f} GFLOP/s "
                  f"= {result['fraction_of_roofline']:.2f} of roofline "
                  f"({result['examples']} prompts of {result['mean_tokens']:.1f} tokens, {result['seconds']:.1f} s, "
                  "Parquet writing included)")
        rss = {}
        for n in (args.examples, 8 * args.examples):
            out = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--threads", str(args.threads),
                                  "--rss-child", str(model_dir), str(n)], capture_output=True, text=True, check=True)
            rss[n] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        small, large = rss[args.examples], rss[8 * args.examples]
        print(f"peak RSS: {small:.0f} MB for {args.examples} examples, {large:.0f} MB for {8 * args.examples} "
              f"examples: ratio {large / small:.3f} (flat within 10%: {abs(large / small - 1) <= 0.10})")


if __name__ == "__main__":
    main()
