import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import matplotlib

matplotlib.use("Agg")
from actbridge.report import plots  # noqa: E402
from actbridge.io import read_parquet_output  # noqa: E402
from actbridge.logs import log_to_file  # noqa: E402

log_to_file(snakemake.log[0])
tables = {name: read_parquet_output(path) for name, path in snakemake.input.items()}
builders = {
    "figure_dataset": lambda: plots.dataset_figure(tables["stats"], tables["accuracy"]),
    "figure_bridge_quality": lambda: plots.bridge_quality_figure(tables["metrics"]),
    "figure_injection_sweep": lambda: plots.injection_sweep_figure(tables["across_seeds"], snakemake.params.method),
    "figure_replacement": lambda: plots.replacement_figure(tables["across_seeds"], snakemake.params.method),
    "figure_causal_sender": lambda: plots.causal_sender_figure(tables["effects"]),
    "figure_causal_receiver": lambda: plots.causal_receiver_figure(tables["effects"]),
    "figure_asymmetric": lambda: plots.channel_figure(tables["across_seeds"], snakemake.params.methods,
                                                     mode="asymmetric"),
    "figure_relay": lambda: plots.channel_figure(tables["across_seeds"], snakemake.params.methods, mode="relay"),
}
plots.save_figure(builders[snakemake.rule](), snakemake.output.pdf, snakemake.output.png)
