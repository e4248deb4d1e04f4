import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import matplotlib

matplotlib.use("Agg")
from actbridge.report import FIGURES, plots  # noqa: E402
from actbridge.io import read_parquet_output  # noqa: E402
from actbridge.logs import log_to_file  # noqa: E402

log_to_file(snakemake.log[0])
spec = FIGURES[snakemake.rule.removeprefix("figure_")]
tables = {name: read_parquet_output(snakemake.input[name]) for name in spec.inputs}
plots.save_figure(getattr(plots, spec.builder)(**tables, **snakemake.params.settings),
                  snakemake.output.pdf, snakemake.output.png)
