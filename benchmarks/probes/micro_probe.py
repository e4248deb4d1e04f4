"""Train one micro model on the pipeline's lm_train and log held-out exact match by hop (one-off probe).

    python benchmarks/probes/micro_probe.py NAME MICRO_JSON [--init MODEL_DIR] [--rows N] [--out DIR]

``MICRO_JSON`` is a ``models.<name>.micro`` mapping (e.g. with ``hop_layer`` or
``tie_embeddings``); ``--init`` continues from a model directory's weights
instead of a fresh init (as the first-hop fine-tune of the shipped sender was
run). Reads ``results/data/lm_train.parquet`` and ``results/models/tokenizer``
(or the model's own tokenizer with ``--init``); writes ``OUT/NAME.jsonl``.

``--moved`` (needs ``hop_layer``) also asks for the first-hop entity at the
*last* relation token of 2-hop questions (the token after the first relation):
the entity moved to where the second look-up is made.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, GPTNeoXForCausalLM  # noqa: E402

from actbridge.models import micro_training  # noqa: E402
from actbridge.models.micro_training import MicroModelConfig, heldout_evaluator, split_heldout, train_micro_model  # noqa: E402


def with_moved_entity(tokenize):
    """``tokenize_lm_split`` that adds, for each 2-hop question, the next token with the same target."""
    def tokenize_moved(table, tokenizer, *, loss_on, max_question_hops=None, first_hop=False):
        sequences = tokenize(table, tokenizer, loss_on=loss_on, max_question_hops=max_question_hops, first_hop=True)
        for row, questions in enumerate(table.column("train_questions").to_pylist()):
            hops = np.array([q["hops"] for q in questions if max_question_hops is None
                             or q["hops"] <= max_question_hops], dtype=int)
            later = hops >= 2  # relations are single tokens in the micro tokenizer: the next token is the last one
            sequences.hop_positions[row] = np.concatenate([sequences.hop_positions[row],
                                                           sequences.hop_positions[row][later] + 1])
            sequences.hop_targets[row] = np.concatenate([sequences.hop_targets[row],
                                                         sequences.hop_targets[row][later]])
        return sequences
    return tokenize_moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("micro", type=json.loads)
    parser.add_argument("--init")
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--data", default=str(ROOT / "results"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--moved", action="store_true")
    args = parser.parse_args()
    if args.moved:
        micro_training.tokenize_lm_split = with_moved_entity(micro_training.tokenize_lm_split)
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
        train_micro_model(MicroModelConfig.from_dict(args.micro), tokenizer, train, device="cpu", evaluate=evaluate,
                          progress=progress, initial=initial)


if __name__ == "__main__":
    main()
