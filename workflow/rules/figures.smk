# Stage "figures": each figure its own target (PDF for print, PNG in the report), one rule per row of
# actbridge.report.FIGURES (its inputs, params and caption in workflow/report/); drawn where Snakemake runs.


for figure in FIGURES.values():

    rule:
        name:
            f"figure_{figure.name}"
        input:
            **{table: f"{RESULTS}/{path}" for table, path in figure.inputs.items()},
        output:
            pdf=f"{RESULTS}/figures/{figure.name}.pdf",
            png=report(f"{RESULTS}/figures/{figure.name}.png", caption=f"../report/{figure.caption}",
                       category="Figures"),
        params:
            settings=figure.settings(config, FIGURE_STYLES),
            code=script_code("figure"),
        log:
            f"logs/figures/{figure.name}.log",
        localrule: True
        conda:
            "../envs/figures.yaml"
        script:
            "../scripts/figure.py"
