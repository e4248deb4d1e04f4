"""Figures and tables of the report: every figure is one row of :data:`FIGURES`, from which the workflow makes
its rule (inputs, params, caption, a local job), ``plan`` counts it and the tests find it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class FigureSpec:
    """One figure: ``results/figures/{name}.{pdf,png}``, drawn by ``actbridge.report.plots.<builder>``."""

    name: str
    builder: str  # a function of actbridge.report.plots, called with the tables, the params and ``fixed``
    inputs: Mapping[str, str]  # its table arguments -> their paths under results/
    caption: str  # the caption's file in workflow/report/
    params: Mapping[str, str] = field(default_factory=dict)  # its keyword arguments -> the dotted config keys
    fixed: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments that never change
    # its keyword arguments -> the styles it draws with (a key of actbridge.catalog.figure_styles: the registries'
    # declarations for the configured items, passed in so that the figure code imports no registry)
    styles: Mapping[str, str] = field(default_factory=dict)

    def settings(self, config: Mapping, styles: Mapping[str, Any]) -> dict[str, Any]:
        """The builder's keyword arguments from a validated config and the configured items' ``styles`` (the
        rule's params: a change reruns exactly the figures that draw with it)."""
        values = {}
        for argument, key in self.params.items():
            node = config
            for part in key.split("."):
                node = node[part]
            values[argument] = node
        return {**values, **{argument: styles[name] for argument, name in self.styles.items()}, **self.fixed}


def _figure(name: str, builder: str, inputs: Mapping[str, str], **keywords) -> FigureSpec:
    return FigureSpec(name, builder, inputs, f"figure_{name}.rst", **keywords)


ACROSS_SEEDS = {"across_seeds": "stats/across_seeds.parquet"}
# Every figure the workflow draws, each a target of its own, in the report's order.
FIGURES: dict[str, FigureSpec] = {spec.name: spec for spec in (
    _figure("dataset", "dataset_figure", {"stats": "data/stats.parquet", "accuracy": "models/accuracy.parquet"}),
    _figure("bridge_quality", "bridge_quality_figure", {"metrics": "bridges/metrics.parquet"},
            styles={"colours": "method_colours"}),
    _figure("injection_sweep", "injection_sweep_figure", ACROSS_SEEDS, params={"method": "figures.method"},
            styles={"drawn": "alpha"}),
    _figure("replacement", "replacement_figure", ACROSS_SEEDS, params={"method": "figures.method"},
            styles={"drawn": "replacement"}),
    _figure("causal_sender", "causal_sender_figure", {"effects": "causal/sender.parquet"}),
    _figure("causal_receiver", "causal_receiver_figure", {"effects": "causal/receiver.parquet"}),
    _figure("asymmetric", "channel_figure", ACROSS_SEEDS, params={"methods": "injection.methods"},
            fixed={"mode": "asymmetric"}, styles={"colours": "method_colours", "kv_colours": "kv_colours"}),
    _figure("relay", "channel_figure", ACROSS_SEEDS, params={"methods": "injection.methods"},
            fixed={"mode": "relay"}, styles={"colours": "method_colours", "kv_colours": "kv_colours"}),
    _figure("kv_layers", "kv_layers_figure", ACROSS_SEEDS, styles={"kv_colours": "kv_colours"}),
    _figure("verdict", "verdict_figure", {"verdict": "stats/verdict.parquet"}),
)}
# The tables gathered where Snakemake runs, beside the figures (seconds, little memory).
SUMMARIES = ("dataset_stats", "accuracy_summary", "bridge_metrics", "stats_summary", "verdict")
