import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

from actbridge.data.worlds import DataConfig, build_split
from actbridge.io import write_parquet
from actbridge.integrity import start_job

start_job(snakemake)
split = snakemake.wildcards.split
config = DataConfig.from_split_params(snakemake.params.data, split)
write_parquet(build_split(config, split), snakemake.output[0])
