"""Figures from the pipeline's tables. Each function takes Parquet tables and returns a matplotlib Figure.

No pyplot state: figures are built on ``matplotlib.figure.Figure`` and
written by :func:`save_figure`, so functions can be called from tests and
jobs alike without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure

from actbridge.io import atomic_path
from actbridge.kv import ROLE as KV_ROLE
from actbridge.kv import site_order
from actbridge.stats.summaries import pooled


# Condition -> (colour, line style), and method -> colour: the registries' declarations, handed to the builders
# as arguments (actbridge.catalog.figure_styles), so a figure reruns when what it draws changes, and only then.
Drawn = Mapping[str, tuple[str, str]]
Colours = Mapping[str, str]


def _colour(colours: Colours, method: str) -> str:
    return colours.get(method, "tab:gray")


def save_figure(figure: Figure, pdf: str | Path, png: str | Path, *, dpi: int = 150) -> None:
    """Write the figure as PDF and PNG, each atomically."""
    for path, options in ((pdf, {}), (png, {"dpi": dpi})):
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=Path(path).suffix[1:], bbox_inches="tight", **options)


def _rows(table: pa.Table, **equal) -> list[dict]:
    return [r for r in table.to_pylist() if all(r[k] == v for k, v in equal.items())]


def _pair_order(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=site_order)


def _grid(n_rows: int, n_cols: int, width: float = 3.2, height: float = 2.6, **kwargs):
    figure = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
    axes = np.atleast_2d(figure.subplots(n_rows, n_cols, squeeze=False, **kwargs))
    return figure, axes


def _empty(axis, message: str) -> None:
    """A panel without data says why. Ticks stay: axes may share them with their neighbours."""
    axis.text(0.5, 0.5, message, ha="center", va="center", transform=axis.transAxes, fontsize=8, color="0.4")


# ---------------------------------------------------------------------------- dataset


def dataset_figure(stats: pa.Table, accuracy: pa.Table) -> Figure:
    """Hop and mode mix per split, prompt length per model, and each model's accuracy by mode and hops."""
    figure, axes = _grid(1, 3, width=4.0, height=3.0)
    mix, lengths, scores = axes[0]
    counts = _rows(stats, statistic="rows")
    splits = [split for split in ("lm_train", "bridge_train", "bridge_val", "eval")
              if any(r["split"] == split for r in counts)]
    groups = sorted({(r["mode"], r["hops"]) for r in counts})
    width = 0.8 / max(len(groups), 1)
    for group_index, (mode, hops) in enumerate(groups):
        values = [sum(r["value"] for r in counts if (r["split"], r["mode"], r["hops"]) == (split, mode, hops))
                  for split in splits]
        mix.bar(np.arange(len(splits)) + group_index * width, values, width, label=f"{mode}, {hops}-hop")
    mix.set_xticks(np.arange(len(splits)) + width * (len(groups) - 1) / 2, splits, fontsize=7)
    mix.set_yscale("log")
    mix.set_ylabel("rows")
    mix.set_title("rows per split, mode and hops")
    mix.legend(fontsize=7)

    tokens = [r for r in _rows(stats, statistic="prompt_tokens", split="eval") if r["item"] in ("mean", "max")]
    models = sorted({r["model"] for r in tokens})
    width = 0.8 / max(len(models), 1)
    for model_index, model in enumerate(models):
        means = [next((r["value"] for r in tokens if (r["model"], r["mode"], r["hops"], r["item"])
                       == (model, mode, hops, "mean")), np.nan) for mode, hops in groups]
        lengths.bar(np.arange(len(groups)) + model_index * width, means, width, label=model)
    lengths.set_xticks(np.arange(len(groups)) + width * (len(models) - 1) / 2,
                       [f"{mode}\n{hops}-hop" for mode, hops in groups], fontsize=7)
    lengths.set_ylabel("mean prompt tokens (eval)")
    lengths.set_title("prompt length, each model's tokenizer")
    lengths.legend(fontsize=7)

    views = sorted({(r["mode"], r["prompt"], r["hops"]) for r in accuracy.to_pylist()})
    models = sorted({r["model"] for r in accuracy.to_pylist()})
    width = 0.8 / max(len(models), 1)
    for model_index, model in enumerate(models):
        values = [next((r["exact_match"] for r in accuracy.to_pylist()
                        if (r["model"], r["mode"], r["prompt"], r["hops"]) == (model, *view)), np.nan) for view in views]
        scores.bar(np.arange(len(views)) + model_index * width, values, width, label=model)
    chance = [next(r["chance"] for r in accuracy.to_pylist() if (r["mode"], r["prompt"], r["hops"]) == view)
              for view in views]
    scores.scatter(np.arange(len(views)) + width * (len(models) - 1) / 2, chance, marker="_", s=300, color="k",
                   label="chance", zorder=3)
    scores.set_xticks(np.arange(len(views)) + width * (len(models) - 1) / 2,
                      [f"{mode}\n{prompt}, {hops}-hop" for mode, prompt, hops in views], fontsize=6)
    scores.set_ylim(0, 1)
    scores.set_ylabel("exact match (eval)")
    scores.set_title("model accuracy by mode, prompt, hops")
    scores.legend(fontsize=7)
    return figure


# ---------------------------------------------------------------------------- bridges


def bridge_quality_figure(metrics: pa.Table, *, colours: Colours) -> Figure:
    """Normalized cosine and R² by layer pair, each method beside its shuffled-pair baseline, mean ± sd over seeds."""
    rows = metrics.to_pylist()
    panels = sorted({(r["role"], r["mode"]) for r in rows})
    pairs = _pair_order(r["pair"] for r in rows)
    methods = sorted({r["method"] for r in rows})
    figure, axes = _grid(2, len(panels), sharex=True)
    for col, (role, mode) in enumerate(panels):
        for row, (metric, label) in enumerate((("cos_normalized", "normalized cosine"), ("r2", "R²"))):
            axis = axes[row, col]
            for method in methods:
                for predictor, style in (("bridge", "-"), ("shuffled", ":")):
                    mean, sd = _seed_summary(rows, pairs, metric, role=role, mode=mode, method=method,
                                             predictor=predictor)
                    axis.errorbar(np.arange(len(pairs)), mean, yerr=sd, linestyle=style, marker="o", markersize=3,
                                  color=_colour(colours, method), capsize=2,
                                  label=method if predictor == "bridge" else None)
            for predictor, color in (("mean", "k"), ("identity", "tab:brown")):
                mean, _ = _seed_summary(rows, pairs, metric, role=role, mode=mode, method=methods[0],
                                        predictor=predictor)
                if np.isfinite(mean).any():
                    axis.plot(np.arange(len(pairs)), mean, "--", color=color, linewidth=1, label=predictor)
            axis.set_ylabel(label)
            if row == 0:
                axis.set_title(f"role {role}, {mode}", fontsize=9)
            axis.set_xticks(np.arange(len(pairs)), pairs, fontsize=7, rotation=45)
    axes[0, -1].legend(fontsize=6, title="solid: bridge\ndotted: shuffled pairs", title_fontsize=6)
    return figure


def _seed_summary(rows: Sequence[dict], pairs: Sequence[str], metric: str, **equal) -> tuple[np.ndarray, np.ndarray]:
    means, sds = [], []
    for pair in pairs:
        values = np.array([r[metric] for r in rows if r["pair"] == pair and all(r[k] == v for k, v in equal.items())
                           and r[metric] is not None], dtype=float)
        means.append(np.nanmean(values) if len(values) and np.isfinite(values).any() else np.nan)
        sds.append(np.nanstd(values) if len(values) > 1 and np.isfinite(values).any() else 0.0)
    return np.array(means), np.array(sds)


# ---------------------------------------------------------------------------- injection


def _panels(across: Sequence[dict]) -> list[tuple[str, str]]:
    return sorted({(r["role"], r["mode"]) for r in across})


def injection_sweep_figure(across_seeds: pa.Table, method: str, *, drawn: Drawn, metric: str = "accuracy"
                           ) -> Figure:
    """Δ vs α for add and add_rescaled (and the random and shuffled controls), crossed-bootstrap CIs.

    One row per (role, mode), one column per layer pair. ``drawn``: the conditions drawn, with their styles.
    """
    rows = [r for r in _rows(across_seeds, method=method, metric=metric, reference="none")
            if r["condition"] in drawn and r["alpha"] is not None]
    scale, unit = (100.0, "Δ accuracy (points)") if metric == "accuracy" else (1.0, "Δ gold log-prob")
    panels = _panels(rows)
    pairs = _pair_order(r["pair"] for r in rows)
    figure, axes = _grid(max(len(panels), 1), max(len(pairs), 1), sharex=True, sharey="row")
    if not rows:
        _empty(axes[0, 0], f"no α-scaled conditions injected with {method}")
        return figure
    for row, (role, mode) in enumerate(panels):
        for col, pair in enumerate(pairs):
            axis = axes[row, col]
            axis.axhline(0, color="k", linewidth=0.6)
            for condition, (color, style) in drawn.items():
                series = sorted((r for r in rows if (r["role"], r["mode"], r["pair"], r["condition"])
                                 == (role, mode, pair, condition)), key=lambda r: r["alpha"])
                if not series:
                    continue
                alphas = np.array([r["alpha"] for r in series])
                axis.plot(alphas, [r["delta"] * scale for r in series], style, color=color, marker="o",
                          markersize=3, label=condition)
                axis.fill_between(alphas, [r["boot_low"] * scale for r in series],
                                  [r["boot_high"] * scale for r in series], color=color, alpha=0.2, linewidth=0)
            axis.set_xscale("log")
            if row == 0:
                axis.set_title(pair, fontsize=9)
            if col == 0:
                axis.set_ylabel(f"{role}, {mode}\n{unit}", fontsize=8)
            if row == len(panels) - 1:
                axis.set_xlabel("α")
    axes[0, -1].legend(fontsize=6)
    figure.suptitle(f"Additive injection ({method} bridge): change vs the baseline, mean over seeds with "
                    "crossed-bootstrap CI", fontsize=9)
    return figure


def replacement_figure(across_seeds: pa.Table, method: str, *, drawn: Drawn, metric: str = "accuracy") -> Figure:
    """Δ of replace, replace_rescaled and the mean / self-patch controls by layer pair, with CIs (``drawn``: the
    conditions drawn, with their styles)."""
    rows = [r for r in _rows(across_seeds, method=method, metric=metric, reference="none") if r["condition"] in drawn]
    drawn = {condition: style for condition, style in drawn.items() if any(r["condition"] == condition for r in rows)}
    scale, unit = (100.0, "Δ accuracy (points)") if metric == "accuracy" else (1.0, "Δ gold log-prob")
    panels = _panels(rows)
    figure, axes = _grid(1, max(len(panels), 1), width=4.2, height=3.0, sharey=True)
    if not rows:
        _empty(axes[0, 0], f"no replacement conditions injected with {method}")
        return figure
    pairs = _pair_order(r["pair"] for r in rows)
    width = 0.8 / max(len(drawn), 1)
    for col, (role, mode) in enumerate(panels):
        axis = axes[0, col]
        axis.axhline(0, color="k", linewidth=0.6)
        for c, (condition, (color, _)) in enumerate(drawn.items()):
            found = {r["pair"]: r for r in rows if (r["role"], r["mode"], r["condition"]) == (role, mode, condition)}
            if not found:
                continue
            x = np.arange(len(pairs)) + c * width
            delta = np.array([found[p]["delta"] * scale if p in found else np.nan for p in pairs])
            low = np.array([found[p]["boot_low"] * scale if p in found else np.nan for p in pairs])
            high = np.array([found[p]["boot_high"] * scale if p in found else np.nan for p in pairs])
            axis.bar(x, delta, width, color=color, label=condition)
            axis.errorbar(x, delta, yerr=[delta - low, high - delta], fmt="none", ecolor="k", capsize=2,
                          linewidth=0.8)
        axis.set_xticks(np.arange(len(pairs)) + width * (len(drawn) - 1) / 2, pairs, fontsize=7,
                        rotation=45)
        axis.set_title(f"role {role}, {mode}", fontsize=9)
        if col == 0:
            axis.set_ylabel(unit)
    handles = {label: handle for axis in axes[0] for handle, label in zip(*axis.get_legend_handles_labels())}
    axes[0, -1].legend(handles.values(), handles.keys(), fontsize=7)
    figure.suptitle(f"Replacement ({method} bridge) and its controls: change vs the baseline, crossed-bootstrap CI",
                    fontsize=9)
    return figure


# ---------------------------------------------------------------------------- causal


def causal_sender_figure(effects: pa.Table, *, metric: str = "accuracy") -> Figure:
    """Δ of the sender's own answer under mean and resample ablation, by sender layer; roles x hop subsets."""
    rows = _rows(effects, metric=metric)
    roles = sorted({r["role"] for r in rows})
    subsets = sorted({r["hops"] for r in rows}, key=lambda h: (h != "all", h))
    scale, unit = (100.0, "Δ accuracy (points)") if metric == "accuracy" else (1.0, "Δ gold log-prob")
    figure, axes = _grid(max(len(subsets), 1), max(len(roles), 1), sharex=True, sharey=True)
    for col, role in enumerate(roles):
        for row, subset in enumerate(subsets):
            axis = axes[row, col]
            axis.axhline(0, color="k", linewidth=0.6)
            if not any((r["role"], r["hops"]) == (role, subset) for r in rows):
                _empty(axis, f"no {subset}-hop examples have role {role}" if subset != "all" else
                       "one hop count only: see below")
            for condition, color in (("mean", "tab:blue"), ("resample", "tab:red"), ("patch", "tab:green")):
                series = sorted((r for r in rows if (r["role"], r["hops"], r["condition"]) == (role, subset, condition)),
                                key=lambda r: r["layer"])
                layers = [r["layer"] for r in series]
                axis.plot(layers, [r["delta"] * scale for r in series], "-o", color=color, markersize=3,
                          label="counterfactual patch" if condition == "patch" else f"{condition} ablation")
                axis.fill_between(layers, [r["ci_low"] * scale for r in series],
                                  [r["ci_high"] * scale for r in series], color=color, alpha=0.2, linewidth=0)
            if row == 0:
                axis.set_title(f"role {role}", fontsize=9)
            if col == 0:
                axis.set_ylabel(f"hops: {subset}\n{unit}", fontsize=8)
            if row == len(subsets) - 1:
                axis.set_xlabel("sender layer (hidden_states index)")
    handles = {label: handle for axis in axes.ravel() for handle, label in zip(*axis.get_legend_handles_labels())}
    axes[0, -1].legend(handles.values(), handles.keys(), fontsize=7)
    figure.suptitle("Sender's own answer when the bridged state is ablated or patched from a counterfactual "
                    "(shared prompts), BCa CI", fontsize=9)
    return figure


def causal_receiver_figure(effects: pa.Table) -> Figure:
    """By receiver layer, per role: answer moved by counterfactual patching (shared) and the accuracy gain
    of self-patching from the full-context prompt (asymmetric, relay), the upper bound of any bridge there."""
    rows = effects.to_pylist()
    roles = sorted({r["role"] for r in rows})
    figure, axes = _grid(1, max(len(roles), 1), sharey=True)
    if not roles:
        _empty(axes[0, 0], "no receiver-side effects")
    for col, role in enumerate(roles):
        axis = axes[0, col]
        axis.axhline(0, color="k", linewidth=0.6)
        for mode, condition, metric, color, label in (
                ("shared", "patch", "moved", "tab:green", "counterfactual patch: answer moved"),
                ("asymmetric", "self_patch", "accuracy", "tab:purple", "self-patch (asymmetric): Δ accuracy"),
                ("relay", "self_patch", "accuracy", "tab:orange", "self-patch (relay): Δ accuracy")):
            layers = sorted({r["layer"] for r in rows if (r["mode"], r["role"], r["condition"]) == (mode, role,
                                                                                                  condition)})
            series = [pooled(rows, role, layer, condition, metric, mode=mode) for layer in layers]
            series = [(layer, r) for layer, r in zip(layers, series) if r is not None]
            if not series:
                continue
            xs = [layer for layer, _ in series]
            axis.plot(xs, [100 * r["delta"] for _, r in series], "-o", color=color, markersize=3, label=label)
            axis.fill_between(xs, [100 * r["ci_low"] for _, r in series], [100 * r["ci_high"] for _, r in series],
                              color=color, alpha=0.2, linewidth=0)
        axis.set_title(f"role {role}", fontsize=9)
        axis.set_xlabel("receiver layer (hidden_states index)")
    axes[0, 0].set_ylabel("Δ, points")
    handles = {label: handle for axis in axes.ravel() for handle, label in zip(*axis.get_legend_handles_labels())}
    if handles:
        axes[0, -1].legend(handles.values(), handles.keys(), fontsize=7)
    figure.suptitle("Receiver: does it read from the injection sites, and what could a perfect bridge deliver? "
                    "BCa CI", fontsize=9)
    return figure


# ---------------------------------------------------------------------------- the asymmetric and relay cases

BRIDGED_SHOWN = {"replace_rescaled": "-", "add_rescaled": "--"}
ASYMMETRIC_CONTROLS = {"mean": "0.5", "shuffled": "tab:brown", "random": "tab:olive"}


def reference_alpha(alphas: Iterable[float]) -> float | None:
    """The α shown for α-scaled conditions: 1 (the receiver's own norm for add_rescaled) if run, else the largest."""
    values = sorted({a for a in alphas if a is not None})
    return 1.0 if 1.0 in values else (values[-1] if values else None)


PARTIAL_MODE_TITLES = {
    "asymmetric": "Asymmetric mode (first-hop fact only in the sender's prompt)",
    "relay": "Relay mode (1-hop questions, every fact only in the sender's prompt)",
}


def channel_figure(across_seeds: pa.Table, methods: Sequence[str], *, mode: str, colours: Colours,
                   kv_colours: Colours | None = None) -> Figure:
    """The cases where a working channel must show: the receiver's prompt lacks facts (``mode``
    asymmetric: the first-hop fact; relay: every fact of a 1-hop question).

    Top row, per role: Δ accuracy against the receiver alone by layer pair for the self-patch upper
    bound, each method's replace_rescaled and add_rescaled (at the reference α), and the controls of
    the first method. Bottom row: channel efficiency, Δ / Δ(self-patch), where the upper bound gains.
    Where the KV channel ran, a last column draws its conditions by number of blocks sent
    (:func:`kv_channel_panels`).
    """
    everything = _rows(across_seeds, mode=mode, metric="accuracy", reference="none")
    rows = [r for r in everything if r["method"] in methods and r["role"] != KV_ROLE]
    kv_rows = [r for r in everything if r["role"] == KV_ROLE]
    roles = sorted({r["role"] for r in rows})
    figure, axes = _grid(2, max(len(roles), 1) + bool(kv_rows), width=4.2, height=2.8, sharex="col")
    if kv_rows:
        kv_channel_panels(axes[0, -1], axes[1, -1], kv_rows, kv_colours or {})
        axes = axes[:, :-1]
    if not rows:
        for axis in axes.ravel():
            _empty(axis, f"no {mode} examples injected")
        return figure
    alpha = reference_alpha(r["alpha"] for r in rows)
    at_alpha = "" if alpha is None else f" α={alpha:g}"  # no α-scaled condition ran: none to name
    pairs = _pair_order(r["pair"] for r in rows)
    ticks = np.arange(len(pairs))

    def series(role: str, method: str, condition: str) -> dict[str, dict]:
        return {r["pair"]: r for r in rows if (r["role"], r["method"], r["condition"]) == (role, method, condition)
                and (r["alpha"] is None or r["alpha"] == alpha)}

    def draw(axis, found: dict[str, dict], label: str, color: str, style: str, scale: float = 100.0) -> None:
        if not found:  # a condition the config did not run gets no line and no legend entry
            return
        delta = np.array([found[pair]["delta"] * scale if pair in found else np.nan for pair in pairs])
        low = np.array([found[pair]["boot_low"] * scale if pair in found else np.nan for pair in pairs])
        high = np.array([found[pair]["boot_high"] * scale if pair in found else np.nan for pair in pairs])
        axis.plot(ticks, delta, style, color=color, marker="o", markersize=3, label=label)
        axis.fill_between(ticks, low, high, color=color, alpha=0.15, linewidth=0)

    for col, role in enumerate(roles):
        top, bottom = axes[0, col], axes[1, col]
        top.axhline(0, color="k", linewidth=0.6, label="receiver alone")
        bound = series(role, methods[0], "self_patch")
        draw(top, bound, "self-patch (upper bound)", "black", "-")
        for method in methods:
            color = _colour(colours, method)
            for condition, style in BRIDGED_SHOWN.items():
                found = series(role, method, condition)
                suffix = at_alpha if condition == "add_rescaled" else ""
                draw(top, found, f"{method}: {condition}{suffix}", color, style)
                ratio = {pair: {"delta": found[pair]["delta"] / bound[pair]["delta"], "boot_low": np.nan,
                                "boot_high": np.nan}
                         for pair in found if pair in bound and bound[pair]["delta"] > 0}
                draw(bottom, ratio, f"{method}: {condition}{suffix}", color, style, scale=1.0)
        for condition, color in ASYMMETRIC_CONTROLS.items():
            suffix = "" if condition == "mean" else at_alpha
            draw(top, series(role, methods[0], condition), f"control {condition}{suffix} ({methods[0]})", color, ":")
        top.set_title(f"role {role}", fontsize=9)
        bottom.axhline(0, color="k", linewidth=0.6)
        bottom.axhline(1, color="black", linewidth=0.6, linestyle="--")
        bottom.set_xticks(ticks, pairs, fontsize=7, rotation=45)
        bottom.set_xlabel("layer pair")
        if col == 0:
            top.set_ylabel("Δ accuracy vs receiver alone\n(points)", fontsize=8)
            bottom.set_ylabel("channel efficiency\nΔ / Δ self-patch", fontsize=8)
        if not any(pair in bound and bound[pair]["delta"] > 0 for pair in pairs):
            _empty(bottom, "self-patch gains nothing: no upper bound to divide by")
    handles = {label: handle for axis in axes[0] for handle, label in zip(*axis.get_legend_handles_labels())}
    if axes.shape[1]:
        axes[0, -1].legend(handles.values(), handles.keys(), fontsize=6)
    figure.suptitle(f"{PARTIAL_MODE_TITLES.get(mode, mode)}:\nbridged state vs the self-patch "
                    "upper bound and controls, mean over seeds with crossed-bootstrap CI", fontsize=9)
    return figure


# ---------------------------------------------------------------------------- the KV channel

def kv_sent_order(pairs: Iterable[str]) -> list[str]:
    """KV sites (``kv-<blocks sent>``) by number of blocks sent, ``kv-all`` last."""
    return sorted(set(pairs), key=site_order)


def kv_channel_panels(top, bottom, rows: Sequence[dict], colours: Colours) -> None:
    """The KV channel in one mode: Δ against the receiver alone of each map's conditions by number of blocks
    sent (top), and each one's share of the own-cache upper bound at the same site (bottom)."""
    pairs = kv_sent_order(r["pair"] for r in rows)
    ticks = np.arange(len(pairs))
    top.axhline(0, color="k", linewidth=0.6)
    bottom.axhline(0, color="k", linewidth=0.6)
    bottom.axhline(1, color="black", linewidth=0.6, linestyle="--")
    methods = sorted({r["method"] for r in rows})
    for number, method in enumerate(methods):
        found = {(r["condition"], r["pair"]): r for r in rows if r["method"] == method}
        # a share only of a bound that gains (its interval above 0): a share of noise is not one
        bound = {pair: found[("kv_own", pair)]["delta"] for pair in pairs
                 if ("kv_own", pair) in found and found[("kv_own", pair)]["boot_low"] > 0}
        for condition in sorted({c for c, _ in found}):
            if condition == "kv_own" and number:
                continue  # one bound: the receiver's own cache is the same whatever the map
            label = "own cache (upper bound)" if condition == "kv_own" else f"{method}: {condition}"
            style = "-" if condition in ("kv_own", "kv_sent") else ":"
            line = ["-", "--", "-."][number % 3] if condition == "kv_sent" else style
            colour = colours.get(condition, "0.5")
            delta = np.array([100 * found[(condition, p)]["delta"] if (condition, p) in found else np.nan for p in pairs])
            low = np.array([100 * found[(condition, p)]["boot_low"] if (condition, p) in found else np.nan for p in pairs])
            high = np.array([100 * found[(condition, p)]["boot_high"] if (condition, p) in found else np.nan
                             for p in pairs])
            top.plot(ticks, delta, line, color=colour, marker="o", markersize=3, label=label)
            top.fill_between(ticks, low, high, color=colour, alpha=0.15, linewidth=0)
            if condition != "kv_own":
                share = np.array([found[(condition, p)]["delta"] / bound[p] if (condition, p) in found
                                  and bound.get(p, 0) > 0 else np.nan for p in pairs])
                bottom.plot(ticks, share, line, color=colour, marker="o", markersize=3, label=label)
    top.set_title("KV channel", fontsize=9)
    top.legend(fontsize=6)
    if not bound:
        _empty(bottom, "the own cache gains nothing here: no bound to divide by")
    for axis in (top, bottom):
        axis.set_xticks(ticks, [p.split("-", 1)[1] for p in pairs], fontsize=7)
    bottom.set_xlabel("receiver blocks sent")
    bottom.set_ylabel("Δ / Δ own cache", fontsize=8)


def kv_layers_figure(across_seeds: pa.Table, *, kv_colours: Colours) -> Figure:
    """The KV channel by number of blocks sent: per mode (rows) and right/wrong metric (columns), Δ of each
    condition against the receiver alone and its share of the own-cache upper bound."""
    rows = [r for r in across_seeds.to_pylist() if r["role"] == KV_ROLE and r["reference"] == "none"]
    modes = sorted({r["mode"] for r in rows}) or ["relay"]
    metrics = ("accuracy", "first_token")
    figure, axes = _grid(2 * len(modes), len(metrics), width=4.2, height=2.6)
    for m, mode in enumerate(modes):
        for c, metric in enumerate(metrics):
            top, bottom = axes[2 * m, c], axes[2 * m + 1, c]
            chosen = [r for r in rows if r["mode"] == mode and r["metric"] == metric]
            if not chosen:
                _empty(top, "the KV channel did not run (kv.enabled)")
                _empty(bottom, "")
                continue
            kv_channel_panels(top, bottom, chosen, kv_colours)
            top.set_title(f"{mode}: Δ {metric.replace('_', ' ')} (points)", fontsize=9)
    figure.suptitle("KV channel: the sender's context entries in the receiver's cache, by number of blocks sent "
                    "(centred on the middle)", fontsize=9)
    return figure


# ---------------------------------------------------------------------------- verdict


VERDICT_COLOURS = {"helps": "tab:green", "upper bound": "black", "harmful": "tab:red", "no effect": "tab:blue",
                   "inconclusive": "tab:orange"}


def verdict_kind(verdict: str) -> str:
    """The verdict's kind, without its numbers: ``helps: 25% of upper bound`` -> ``helps``."""
    return next(kind for kind in VERDICT_COLOURS if verdict.startswith(kind))


def verdict_figure(verdict: pa.Table) -> Figure:
    """Per context mode, every verdict row's Δ with its crossed-bootstrap interval; for the rows without a
    significant effect, what their test could detect: the shaded band is ± the smallest effect found with the
    configured power at the row's site, the tick the effect a `no effect` row must be able to detect. A point inside its band, with the band inside
    the ticks, rules the channel out; a band wider than the ticks leaves the row inconclusive."""
    rows = [r for r in verdict.to_pylist() if r["headline"]]  # stats.metric's rows; the other metric is in the Markdown
    modes = sorted({r["mode"] for r in rows})
    heights = [max(1, sum(r["mode"] == mode for r in rows)) for mode in modes] or [1]
    figure = Figure(figsize=(6.4, 1.0 + 0.28 * sum(heights) + 0.5 * len(heights)), layout="constrained")
    axes = figure.subplots(len(heights), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    if not rows:
        _empty(axes[0], "no verdict rows")
        return figure
    for axis, mode in zip(axes, modes):
        of_mode = [r for r in rows if r["mode"] == mode]
        y = np.arange(len(of_mode))[::-1]
        for level, r in zip(y, of_mode):
            kind = verdict_kind(r["verdict"])
            colour = VERDICT_COLOURS[kind]
            if kind in ("no effect", "inconclusive"):  # where power decides the verdict, as in its Markdown
                detectable, threshold = 100 * r["detectable"], 100 * r["threshold"]
                axis.fill_betweenx([level - 0.35, level + 0.35], -detectable, detectable, color=colour, alpha=0.15,
                                   linewidth=0)
                axis.plot([-threshold, threshold], [level, level], "|", color="0.3", markersize=9)
            axis.errorbar(100 * r["delta"], level, xerr=[[100 * (r["delta"] - r["ci_low"])],
                                                          [100 * (r["ci_high"] - r["delta"])]],
                          fmt="o", color=colour, markersize=3, capsize=2, linewidth=1)
        axis.axvline(0, color="k", linewidth=0.6)
        axis.set_yticks(y, [f"{r['method']} · {r['role']} · {r['condition']}" for r in of_mode], fontsize=7)
        axis.set_title(f"mode {mode}", fontsize=9)
        axis.tick_params(axis="x", labelsize=7)
    metric = rows[0].get("metric") or "accuracy"
    axes[-1].set_xlabel(f"Δ {metric} vs receiver alone (points); band: detectable with the configured power; "
                        "ticks: the threshold", fontsize=7)
    handles = [axes[0].plot([], [], "o", color=colour, label=kind)[0] for kind, colour in VERDICT_COLOURS.items()]
    axes[0].legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle("Verdict: each condition's best site, and the smallest effect its test could detect", fontsize=9)
    return figure
