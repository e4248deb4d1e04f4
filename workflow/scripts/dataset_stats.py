import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package


from actbridge.data.statistics import dataset_statistics, statistics_markdown
from actbridge.io import write_parquet, write_text
from actbridge.integrity import read_table, start_job
from actbridge.models.loading import load_tokenizer

start_job(snakemake)
splits = {path.split("/")[-1].removesuffix(".parquet"): read_table(path) for path in snakemake.input.splits}
tokenizers = {path.rstrip("/").split("/")[-1]: load_tokenizer(path) for path in snakemake.input.models}
stats = dataset_statistics(splits, tokenizers)
write_parquet(stats, snakemake.output.table)
write_text(statistics_markdown(stats), snakemake.output.markdown)
