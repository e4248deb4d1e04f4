import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow.parquet as pq

from actbridge.data.statistics import dataset_statistics, statistics_markdown
from actbridge.io import write_parquet, write_text
from actbridge.logs import log_to_file
from actbridge.models.loading import load_tokenizer

log_to_file(snakemake.log[0])
splits = {path.split("/")[-1].removesuffix(".parquet"): pq.read_table(path) for path in snakemake.input.splits}
tokenizers = {path.rstrip("/").split("/")[-1]: load_tokenizer(path) for path in snakemake.input.models}
stats = dataset_statistics(splits, tokenizers)
write_parquet(stats, snakemake.output.table)
write_text(statistics_markdown(stats), snakemake.output.markdown)
