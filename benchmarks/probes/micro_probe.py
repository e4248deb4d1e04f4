"""Train one micro model on the pipeline's lm_train and log held-out exact match by hop (one-off probe).

    python benchmarks/probes/micro_probe.py NAME MICRO_JSON [--init MODEL_DIR] [--rows N] [--out DIR]

``MICRO_JSON`` is a ``models.<name>.micro`` mapping (e.g. with ``hop_layer`` or
``tie_embeddings``); ``--init`` continues from a model directory's weights
instead of a fresh init (as the first-hop fine-tune of the shipped sender was
run). Reads ``results/data/lm_train.parquet`` and ``results/models/tokenizer``
(or the model's own tokenizer with ``--init``); writes ``OUT/NAME.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, GPTNeoXForCausalLM  # noqa: E402

from actbridge.training import MicroModelConfig, heldout_evaluator, split_heldout, train_micro_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("micro", type=json.loads)
    parser.add_argument("--init")
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--data", default=str(ROOT / "results"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.init or Path(args.data) / "models" / "tokenizer")
    lm_train = pq.read_table(Path(args.data) / "data" / "lm_train.parquet")
    train, heldout = split_heldout(lm_train.slice(0, args.rows), 500)
    evaluate = heldout_evaluator(heldout, tokenizer)
    initial = GPTNeoXForCausalLM.from_pretrained(args.init) if args.init else None
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with open(Path(args.out) / f"{args.name}.jsonl", "w") as log:
        def progress(record: dict) -> None:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if initial is not None:
            progress({"step": 0, **evaluate(initial.eval())})
        train_micro_model(MicroModelConfig.from_dict(args.micro), tokenizer, train, evaluate, progress,
                          initial=initial)


if __name__ == "__main__":
    main()
