"""Bridge fitting: closed-form ridge (streamed sufficient statistics) against Adam-trained linear maps.

    python benchmarks/bridge_fit.py [--activations results/activations] [--pair s2-r3] [--role last]

Reads the pipeline's shards for one layer pair (run the workflow first) and
fits, on the same rows (each timing opens the shards afresh: reading included),
`ridge` (penalty grid picked on bridge_val) and
`sgd` (Adam on MSE, the pipeline's default settings, early stopping on
bridge_val). Prints each one's wall time (reading the shards included) and
its held-out normalized cosine and R² on eval, and the time ratio sgd / ridge
(target >= 20); then the same two fits on rows already in memory, so the
ratio of the fits alone is there beside the end-to-end one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from actbridge.activations.store import ActivationStore  # noqa: E402
from actbridge.bridges.alignment import alignment_metrics  # noqa: E402
from actbridge.bridges.jobs import pair_stream  # noqa: E402
from actbridge.bridges.maps import fit_normalizers  # noqa: E402
from actbridge.bridges.methods import fit_bridge  # noqa: E402
from actbridge.activations.layers import parse_pair  # noqa: E402

MODES = ("shared", "asymmetric")


def open_stores(root: Path) -> dict:
    """Fresh stores (empty shard caches); checksums were verified once in main()."""
    return {model: {split: ActivationStore(root / model / split, verify=False)
                    for split in ("bridge_train", "bridge_val", "eval")} for model in ("sender", "receiver")}


def in_memory(stream):
    """The same stream over rows read once, now."""
    batches = list(stream())
    return lambda: iter(batches)


def timed_fit(method: str, root: Path, sender_layer: int, receiver_layer: int, role: str, repeats: int,
              rows_in_memory: bool = False):
    """Best-of-``repeats`` wall time of normalizers + fit; with ``rows_in_memory`` the rows are read before
    the clock starts."""
    best = float("inf")
    for _ in range(repeats):
        stores = open_stores(root)
        streams = {split: pair_stream(stores["sender"][split], stores["receiver"][split], sender_layer,
                                      receiver_layer, role, MODES) for split in ("bridge_train", "bridge_val", "eval")}
        if rows_in_memory:
            streams = {split: in_memory(stream) for split, stream in streams.items()}
        started = time.perf_counter()
        sender, receiver = fit_normalizers(streams["bridge_train"]())
        bridge = fit_bridge(method, streams["bridge_train"], streams["bridge_val"], sender, receiver,
                            settings=None, seed=0)
        best = min(best, time.perf_counter() - started)
    score = alignment_metrics(bridge.map_normalized, streams["eval"], bridge.sender, bridge.receiver)
    return best, score, bridge.info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activations", default=str(ROOT / "results" / "activations"))
    parser.add_argument("--pair", default="s2-r3")
    parser.add_argument("--role", default="last")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    root = Path(args.activations)
    for model in ("sender", "receiver"):
        for split in ("bridge_train", "bridge_val", "eval"):
            ActivationStore(root / model / split)  # verify the checksums once, outside the timings
    sender_layer, receiver_layer = parse_pair(args.pair)
    for in_memory, what in ((False, "reading the shards included"), (True, "fits alone, rows in memory")):
        results = {}
        for method in ("ridge", "sgd"):
            seconds, score, info = timed_fit(method, root, sender_layer, receiver_layer, args.role, args.repeats,
                                             in_memory)
            results[method] = seconds
            print(f"{method:5s}: {seconds:7.3f} s (best of {args.repeats}), held-out cos_normalized "
                  f"{score['cos_normalized']:.4f}, R² {score['r2']:.4f}, rows {info['train_rows']}"
                  + (f", penalty {info['penalty']}" if "penalty" in info else f", epochs {info['epochs_run']}"))
        print(f"pair {args.pair}, role {args.role}, {what}: sgd / ridge wall time = "
              f"{results['sgd'] / results['ridge']:.1f}x")


if __name__ == "__main__":
    main()
