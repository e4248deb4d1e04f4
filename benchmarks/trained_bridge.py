"""The trained bridge's training step: the cached-prefix answer loss against the whole sequence.

    python benchmarks/trained_bridge.py [--model results/models/receiver] [--data results/data/bridge_train.parquet]
                                        [--layers 3 5] [--roles last bridge] [--batches 20] [--shapes 160m]

One training step of ``bridge.trained`` (batch of 16, the default): the gold answer's loss with a
bridged vector injected at the role's token, then its gradient. The naive way runs every whole
sequence with a gradient; ours runs the prompt before the injection once without one (its key/value
cache) and only the rest with one (for the last-token role: that token and the answer's). On the
pipeline's receiver and rows (run the workflow first), and with ``--shapes`` on a random-init
Pythia-shaped receiver over the same prompts. Prints the wall-time ratio naive / cached per (layer,
role) and the largest loss and gradient differences between the two.
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
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from actbridge.models.loading import load_for_job  # noqa: E402
from actbridge.bridges.through_receiver import (AnswerRows, answer_rows, cached_prefix_answer_loss,  # noqa: E402
                              whole_sequence_answer_loss)

BATCH = 16


def step_seconds(loss_of, receiver, layer: int, rows: AnswerRows, batches: int, repeats: int):
    """Best-of-``repeats`` seconds for ``batches`` steps of loss + backward; the last losses and gradients."""
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(batches * BATCH, receiver.config.hidden_size, generator=generator)
    best, losses, gradients = float("inf"), [], []
    for _ in range(repeats):
        losses, gradients = [], []
        started = time.perf_counter()
        for b in range(batches):
            index = np.arange(b * BATCH, (b + 1) * BATCH) % len(rows)
            bridged = vectors[b * BATCH:(b + 1) * BATCH].clone().requires_grad_(True)
            loss = loss_of(receiver, layer, rows, index, bridged, "replace", 0)
            loss.backward()
            losses.append(loss.item())
            gradients.append(bridged.grad)
        best = min(best, time.perf_counter() - started)
    return best, np.array(losses), torch.cat(gradients)


def compare(receiver, layer: int, rows: AnswerRows, batches: int, repeats: int, what: str) -> None:
    naive, naive_losses, naive_grad = step_seconds(whole_sequence_answer_loss, receiver, layer, rows, batches, repeats)
    cached, cached_losses, cached_grad = step_seconds(cached_prefix_answer_loss, receiver, layer, rows, batches, repeats)
    tokens = np.mean([len(t) for t in rows.token_ids])
    after = np.mean([len(t) - p for t, p in zip(rows.token_ids, rows.positions)])
    scale = float(naive_grad.norm())
    gradient = (f"gradient relative diff {float((cached_grad - naive_grad).norm()) / scale:.1e}" if scale > 0 else
                f"gradient 0 in both (the edit cannot reach the answer), max |diff| {float(cached_grad.abs().max()):.1e}")
    print(f"{what}: {batches} steps of {BATCH}: naive {naive:.2f} s, cached prefix {cached:.2f} s = "
          f"{naive / cached:.1f}x (tokens per row {tokens:.0f}, from the injection on {after:.1f}); "
          f"max |d loss| {np.abs(cached_losses - naive_losses).max():.1e}, {gradient}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "results" / "models" / "receiver"))
    parser.add_argument("--data", default=str(ROOT / "results" / "data" / "bridge_train.parquet"))
    parser.add_argument("--layers", nargs="+", type=int, default=[3, 5])
    parser.add_argument("--roles", nargs="+", default=["last", "bridge"])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--shapes", nargs="*", default=[], help="also a random-init Pythia-shaped receiver")
    args = parser.parse_args()
    handle = load_for_job(args.model, "cpu", "float32", args.threads)
    receiver = handle.model
    receiver.requires_grad_(False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    table = pq.read_table(args.data)
    keys = list(zip(table.column("example_id").to_pylist(), table.column("mode").to_pylist()))
    rows = {role: answer_rows(handle, table, role, keys, np.zeros((len(keys), 1), dtype=np.float32))
            for role in args.roles}
    for role in args.roles:
        for layer in args.layers:
            compare(receiver, layer, rows[role], args.batches, args.repeats, f"receiver, layer {layer}, role {role}")
    if args.shapes:
        from extraction import pythia_shaped  # the benchmarks' random-init Pythia shapes

        for shape in args.shapes:
            model = pythia_shaped(shape).requires_grad_(False)
            layer = model.config.num_hidden_layers // 2
            for role in args.roles:
                compare(model, layer, rows[role], max(2, args.batches // 5), args.repeats,
                        f"pythia-{shape} shape, layer {layer}, role {role}")


if __name__ == "__main__":
    main()
