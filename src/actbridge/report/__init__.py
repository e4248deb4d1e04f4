"""Figures."""

# Every figure the workflow draws, each a target of its own (results/figures/{name}.{pdf,png}).
FIGURES = ("dataset", "bridge_quality", "injection_sweep", "replacement", "causal_sender", "causal_receiver",
           "asymmetric", "relay")
# The tables gathered where Snakemake runs, beside the figures (seconds, little memory).
SUMMARIES = ("dataset_stats", "accuracy_summary", "bridge_metrics", "stats_summary", "verdict")
