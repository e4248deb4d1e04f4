import sys; sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # noqa: E702 - the actbridge package

from actbridge.dataset import DataConfig, build_split
from actbridge.io import write_parquet
from actbridge.logs import log_to_file

log_to_file(snakemake.log[0])
p = snakemake.params.data
split = snakemake.wildcards.split
config = DataConfig(seed=p["seed"], hops=tuple(p["hops"]), distractors=p["distractors"],
                    context_modes=tuple(p.get("context_modes", ("shared",))),
                    sizes={split: p["size"]}, train_questions=p.get("train_questions", 6),
                    template=p["template"])
write_parquet(build_split(config, split), snakemake.output[0])
