"""One bridge job: fit one method and seed for one layer pair, every role; score it and its baselines.

Rows come from the activation shards of both models: the sender's states on
its own prompt, the receiver's on the full-context prompt (the state a bridge
should deliver). In ``shared`` mode the two prompts are the same text.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from actbridge.activations import ActivationStore, iter_aligned
from actbridge.alignment import METRICS, alignment_metrics_by_predictor, identity_predictor, mean_predictor
from actbridge.layout import pair_name
from actbridge.bridges import (Bridge, BridgeSettings, PairStream, fit_bridge, fit_normalizers,
                               shuffled_pairs)

log = logging.getLogger(__name__)


def pair_stream(sender: ActivationStore, receiver: ActivationStore, sender_layer: int, receiver_layer: int,
                role: str, modes: Sequence[str] | None) -> PairStream:
    return lambda: iter_aligned(sender.iter_chunks(sender_layer, role, modes),
                                receiver.iter_chunks(receiver_layer, role, modes))


def metrics_rows(bridge: Bridge, shuffled: Bridge, stream: PairStream, identity_ok: bool) -> list[dict]:
    predictors = {"bridge": bridge.map_normalized, "shuffled": shuffled.map_normalized,
                  "mean": mean_predictor(len(bridge.receiver.mean))}
    if identity_ok:
        predictors["identity"] = identity_predictor
    metrics = alignment_metrics_by_predictor(predictors, stream, bridge.sender, bridge.receiver)
    return [{"predictor": name, **values} for name, values in metrics.items()]


# A bridge trained through the receiver starts from this offline fit (and its shuffled baseline is this fit).
TRAINED_START = "ridge"


def run_bridge_job(stores: dict[str, dict[str, ActivationStore]], sender_layer: int, receiver_layer: int,
                   method: str, seed: int, roles: Sequence[str], fit_modes: Sequence[str],
                   eval_modes: Sequence[str], settings: BridgeSettings, out_dir: str | Path,
                   provenance: dict, train_through_receiver: Callable[[str, Bridge], Bridge] | None = None
                   ) -> pa.Table:
    """Fit and score; ``stores[model][split]`` for model in sender/receiver, split in bridge_train/val/eval.

    Writes ``out_dir/{role}/bridge.{safetensors,json}`` and returns the metrics
    table (one row per role x eval mode x predictor). ``method == "trained"``
    fits the ``TRAINED_START`` bridge offline, then hands it to
    ``train_through_receiver(role, bridge)`` (see :mod:`actbridge.trained`).
    """
    if method == "trained" and train_through_receiver is None:
        raise ValueError("the trained bridge needs the receiver: pass train_through_receiver")
    offline = TRAINED_START if method == "trained" else method
    out_dir = Path(out_dir)
    rows = []
    for role in roles:
        def stream(split: str, modes: Sequence[str] | None) -> PairStream:
            return pair_stream(stores["sender"][split], stores["receiver"][split], sender_layer, receiver_layer,
                               role, modes)

        train, val = stream("bridge_train", fit_modes), stream("bridge_val", fit_modes)
        sender_norm, receiver_norm = fit_normalizers(train())
        bridge = fit_bridge(offline, train, val, sender_norm, receiver_norm, settings, seed)
        shuffled = fit_bridge(offline, shuffled_pairs(train, seed), shuffled_pairs(val, seed), sender_norm,
                              receiver_norm, settings, seed)
        if method == "trained":
            bridge = train_through_receiver(role, bridge)
        bridge.save(out_dir / role, {**provenance, "role": role, "sender_layer": sender_layer,
                                     "receiver_layer": receiver_layer, "fit_modes": list(fit_modes)})
        identity_ok = len(sender_norm.mean) == len(receiver_norm.mean)
        for mode in eval_modes:
            for row in metrics_rows(bridge, shuffled, stream("eval", [mode]), identity_ok):
                rows.append({"pair": pair_name(sender_layer, receiver_layer), "sender_layer": sender_layer,
                             "receiver_layer": receiver_layer, "method": method, "seed": seed, "role": role,
                             "mode": mode, **row})
        log.info("%s %s seed %d role %s: %s", pair_name(sender_layer, receiver_layer), method, seed, role,
                 {r["mode"]: round(r["cos_normalized"], 4) for r in rows
                  if r["role"] == role and r["predictor"] == "bridge"})
    return metrics_table(rows)


METRICS_SCHEMA = pa.schema([
    ("pair", pa.string()), ("sender_layer", pa.int16()), ("receiver_layer", pa.int16()),
    ("method", pa.string()), ("seed", pa.int32()), ("role", pa.string()), ("mode", pa.string()),
    ("predictor", pa.string()), ("n", pa.int64()), *[(metric, pa.float64()) for metric in METRICS],
])


def metrics_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)


def metrics_markdown(table: pa.Table) -> str:
    """Mean over seeds of each predictor's normalized cosine and R^2, per pair x method x role x mode."""
    keys = ["pair", "sender_layer", "receiver_layer", "method", "role", "mode", "predictor"]
    summary = table.group_by(keys).aggregate([("cos_normalized", "mean"), ("r2", "mean"), ("cos_raw", "mean"),
                                              ("seed", "count_distinct")])
    summary = summary.sort_by([("role", "ascending"), ("mode", "ascending"), ("sender_layer", "ascending"),
                               ("method", "ascending"), ("predictor", "ascending")])
    lines = ["# Bridge alignment on held-out eval states", "",
             "Mean over seeds. `bridge`: the fitted map; baselines: `mean` (the receiver's bridge_train mean; "
             "no direction, so its normalized cosine is NaN), `shuffled` (the same method fitted on mismatched "
             "pairs), `identity` (where dimensions match). cos_n: cosine in normalized space; cos_raw: in raw "
             "space.", "",
             "| role | mode | pair | method | predictor | seeds | cos_n | R² | cos_raw |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in summary.to_pylist():
        lines.append(f"| {row['role']} | {row['mode']} | {row['pair']} | {row['method']} | {row['predictor']} | "
                     f"{row['seed_count_distinct']} | {_fmt(row['cos_normalized_mean'])} | {_fmt(row['r2_mean'])} | "
                     f"{_fmt(row['cos_raw_mean'])} |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"
