import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

import pyarrow.parquet as pq

from actbridge.io import atomic_directory
from actbridge.logs import log_to_file
from actbridge.models.tokenizer import train_bpe_tokenizer

log_to_file(snakemake.log[0])
lm_train = pq.read_table(snakemake.input[0], columns=["full_prompt"])
tokenizer = train_bpe_tokenizer(lm_train.column("full_prompt").to_pylist(), snakemake.params.vocab_size)
with atomic_directory(snakemake.output[0]) as tmp:
    tokenizer.save_pretrained(tmp)
