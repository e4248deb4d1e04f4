import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import matplotlib

matplotlib.use("Agg")
from actbridge.report import FIGURES, plots  # noqa: E402
from actbridge.integrity import read_table, start_job  # noqa: E402

start_job(snakemake)
spec = FIGURES[snakemake.rule.removeprefix("figure_")]
tables = {name: read_table(snakemake.input[name]) for name in spec.inputs}
plots.save_figure(getattr(plots, spec.builder)(**tables, **snakemake.params.settings),
                  snakemake.output.pdf, snakemake.output.png)
