import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package


from actbridge.io import atomic_directory
from actbridge.integrity import read_table, start_job
from actbridge.models.tokenizer import train_bpe_tokenizer

start_job(snakemake)
lm_train = read_table(snakemake.input[0], columns=["full_prompt"])
tokenizer = train_bpe_tokenizer(lm_train.column("full_prompt").to_pylist(), snakemake.params.vocab_size)
with atomic_directory(snakemake.output[0]) as tmp:
    tokenizer.save_pretrained(tmp)
