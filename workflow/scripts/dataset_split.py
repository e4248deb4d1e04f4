import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

from actbridge.data.worlds import DataConfig, build_split
from actbridge.io import write_parquet
from actbridge.logs import log_to_file

log_to_file(snakemake.log[0])
p = snakemake.params.data
split = snakemake.wildcards.split
data = {key: value for key, value in p.items() if key not in ("seed", "size")}
config = DataConfig.from_config({"seed": p["seed"], "data": {**data, "sizes": {split: p["size"]}}})
write_parquet(build_split(config, split), snakemake.output[0])
