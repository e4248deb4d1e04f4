"""One bridge job: fit one method and seed for one layer pair, every role; score it and its baselines.

Rows come from the activation shards of both models: the sender's states on
its own prompt, the receiver's on the full-context prompt (the state a bridge
should deliver). In ``shared`` mode the two prompts are the same text.

By default each context mode gets its own fit (:func:`fit_groups`): shared rows ask for a translation
of the same prompt's state, asymmetric rows for a prediction of the full-context state from a sender
that saw only the first-hop facts. One map pooled over both serves neither: for a model bridged to
itself the pooled ridge map falls short of the identity (docs/measurements.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa

from actbridge.activations.store import ActivationStore, iter_aligned
from actbridge.bridges.alignment import METRICS, alignment_metrics_by_predictor, identity_predictor, mean_predictor
from actbridge.io import write_json
from actbridge.markdown import number, table_lines
from actbridge.activations.layers import pair_name, parse_pair
from actbridge.bridges.methods import BRIDGE_METHODS, fit_bridge, offline_method
from actbridge.bridges.maps import Bridge, PairStream, fit_normalizers, shuffled_pairs

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


FIT_STRATEGIES = ("per_mode", "pooled")
# The fit that serves relay rows in an offline per-mode plan: both models read the full 1-hop prompt there, so its
# state pairs are shared mode's 1-hop pairs (a model bridged to itself must be the identity on both).
RELAY_FIT = "shared"


@dataclass(frozen=True)
class FitGroup:
    """One fit of a bridge job: the context modes whose bridge_train rows it fits on, and the eval modes it serves.

    ``name`` is its directory under the role (``shared``, ``asymmetric``, ``relay`` or ``pooled``).
    """

    name: str
    train_modes: tuple[str, ...]
    serves: tuple[str, ...]


def fit_groups(strategy: str, context_modes: Sequence[str], pooled_modes: Sequence[str], *,
               through_receiver: bool = False) -> list[FitGroup]:
    """The fits of one (pair, method, seed, role), each serving the eval modes it is injected into.

    ``per_mode``: one fit per context mode on that mode's rows. Offline maps serve ``relay`` with the
    ``shared`` fit (the same state pairs); a bridge trained through the receiver trains on relay rows
    for relay, since there the receiver reads a different prompt. ``pooled``: one fit on
    ``pooled_modes`` rows (``bridge.fit_modes``) serving every mode.
    """
    if strategy == "pooled":
        return [FitGroup("pooled", tuple(pooled_modes), tuple(context_modes))]
    if strategy != "per_mode":
        raise ValueError(f"bridge.fit: {strategy!r} not in {list(FIT_STRATEGIES)}")
    shares_relay = not through_receiver and "relay" in context_modes and RELAY_FIT in context_modes
    groups = []
    for mode in context_modes:
        if mode == "relay" and shares_relay:
            continue
        serves = (mode, "relay") if mode == RELAY_FIT and shares_relay else (mode,)
        groups.append(FitGroup(mode, (mode,), serves))
    return groups


FITS_FILE = "fits.json"


def load_bridges(role_dir: str | Path) -> dict[str, Bridge]:
    """Eval mode -> its bridge, from one role's directory of a bridge job (see :func:`run_bridge_job`)."""
    role_dir = Path(role_dir)
    fits = json.loads((role_dir / FITS_FILE).read_text())
    loaded = {name: Bridge.load(role_dir / name) for name in sorted(set(fits.values()))}
    return {mode: loaded[name] for mode, name in fits.items()}


def load_fit_modes(role_dir: str | Path) -> dict[str, tuple[str, ...]]:
    """Eval mode -> the context modes whose bridge_train rows its bridge was fitted on."""
    role_dir = Path(role_dir)
    fits = json.loads((role_dir / FITS_FILE).read_text())
    return {mode: tuple(json.loads((role_dir / name / "bridge.json").read_text())["fit_modes"])
            for mode, name in fits.items()}


@dataclass(frozen=True)
class BridgeRun:
    """Which bridge a job fits or injects: layer pair, method and seed."""

    sender_layer: int
    receiver_layer: int
    method: str
    seed: int

    @property
    def pair(self) -> str:
        return pair_name(self.sender_layer, self.receiver_layer)

    @classmethod
    def from_wildcards(cls, pair: str, method: str, seed: str | int) -> "BridgeRun":
        sender_layer, receiver_layer = parse_pair(pair)
        return cls(sender_layer, receiver_layer, method, int(seed))


def run_bridge_job(stores: dict[str, dict[str, ActivationStore]], run: BridgeRun, *, roles: Sequence[str],
                   groups: Sequence[FitGroup],
                   settings: Mapping[str, Any] | None, out_dir: str | Path, provenance: dict,
                   train_through_receiver: Callable[[str, Bridge, Sequence[str]], Bridge] | None = None
                   ) -> pa.Table:
    """Fit and score; ``stores[model][split]`` for model in sender/receiver, split in bridge_train/val/eval.

    For each role and fit group, writes ``out_dir/{role}/{group}/bridge.{safetensors,json}`` and
    ``out_dir/{role}/fits.json`` (eval mode -> group), and scores each group's bridge on the eval
    rows of the modes it serves. Returns the metrics table (one row per role x eval mode x predictor).
    A group without training rows for a role (a relay prompt names no bridge entity) is skipped.
    A method trained through the receiver fits its ``start`` method offline, then hands it to
    ``train_through_receiver(role, bridge, train_modes)`` (see :mod:`actbridge.bridges.through_receiver`).
    """
    method, seed, sender_layer, receiver_layer = run.method, run.seed, run.sender_layer, run.receiver_layer
    through_receiver = BRIDGE_METHODS[method].through_receiver
    if through_receiver and train_through_receiver is None:
        raise ValueError(f"the {method} bridge needs the receiver: pass train_through_receiver")
    offline = offline_method(method)
    out_dir = Path(out_dir)
    rows = []
    for role in roles:
        def stream(split: str, modes: Sequence[str] | None) -> PairStream:
            return pair_stream(stores["sender"][split], stores["receiver"][split], sender_layer, receiver_layer,
                               role, modes)

        fits = {}
        for group in groups:
            train, val = stream("bridge_train", group.train_modes), stream("bridge_val", group.train_modes)
            if not any(True for _ in train()):
                log.info("role %s has no %s rows: no %s fit", role, "/".join(group.train_modes), group.name)
                continue
            sender_norm, receiver_norm = fit_normalizers(train())
            bridge = fit_bridge(offline, train, val, sender_norm, receiver_norm, settings=settings, seed=seed)
            shuffled = fit_bridge(offline, shuffled_pairs(train, seed), shuffled_pairs(val, seed), sender_norm,
                                  receiver_norm, settings=settings, seed=seed)
            if through_receiver:
                bridge = train_through_receiver(role, bridge, group.train_modes)
            bridge.save(out_dir / role / group.name,
                        {**provenance, "role": role, "sender_layer": sender_layer, "receiver_layer": receiver_layer,
                         "fit": group.name, "fit_modes": list(group.train_modes), "serves": list(group.serves)})
            identity_ok = len(sender_norm.mean) == len(receiver_norm.mean)
            for mode in group.serves:
                fits[mode] = group.name
                for row in metrics_rows(bridge, shuffled, stream("eval", [mode]), identity_ok):
                    rows.append({"pair": pair_name(sender_layer, receiver_layer), "sender_layer": sender_layer,
                                 "receiver_layer": receiver_layer, "method": method, "seed": seed, "role": role,
                                 "mode": mode, "fit": group.name, **row})
        (out_dir / role).mkdir(parents=True, exist_ok=True)
        write_json(fits, out_dir / role / FITS_FILE)
        log.info("%s %s seed %d role %s: %s", pair_name(sender_layer, receiver_layer), method, seed, role,
                 {f"{r['mode']} ({r['fit']} fit)": round(r["cos_normalized"], 4) for r in rows
                  if r["role"] == role and r["predictor"] == "bridge"})
    return metrics_table(rows)


METRICS_SCHEMA = pa.schema([
    ("pair", pa.string()), ("sender_layer", pa.int16()), ("receiver_layer", pa.int16()),
    ("method", pa.string()), ("seed", pa.int32()), ("role", pa.string()), ("mode", pa.string()),
    ("fit", pa.string()), ("predictor", pa.string()), ("n", pa.int64()),
    *[(metric, pa.float64()) for metric in METRICS],
])


def metrics_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)


def metrics_markdown(table: pa.Table) -> str:
    """Mean over seeds of each predictor's normalized cosine and R^2, per pair x method x role x mode."""
    import polars as pl  # here, not at the top: the bridge jobs import this module and need no polars

    keys = ["pair", "sender_layer", "receiver_layer", "method", "role", "mode", "fit", "predictor"]
    summary = (pl.from_arrow(table).group_by(keys, maintain_order=True)
               .agg(pl.col("cos_normalized", "r2", "cos_raw").mean(), seeds=pl.col("seed").drop_nulls().n_unique())
               # the rest of the key breaks ties (pyarrow's group_by left them in its hash order)
               .sort("role", "mode", "sender_layer", "method", "predictor", "receiver_layer", "fit"))
    lines = ["# Bridge alignment on held-out eval states", "",
             "Mean over seeds. `bridge`: the fitted map; baselines: `mean` (the receiver's bridge_train mean; "
             "no direction, so its normalized cosine is NaN), `shuffled` (the same method fitted on mismatched "
             "pairs), `identity` (where dimensions match). cos_n: cosine in normalized space; cos_raw: in raw "
             "space. fit: the rows the bridge scored in this mode was fitted on (a context mode's own, or "
             "pooled).", ""]
    cells = [[row["role"], row["mode"], row["pair"], row["method"], row["fit"], row["predictor"], str(row["seeds"]),
              *(_fmt(row[metric]) for metric in ("cos_normalized", "r2", "cos_raw"))]
             for row in summary.iter_rows(named=True)]
    lines += table_lines(["role", "mode", "pair", "method", "fit", "predictor", "seeds", "cos_n", "R²", "cos_raw"],
                         cells)
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return number(value, decimals=3, signed=False)
