"""The learning curves of two_hop_walk.py runs: held-out 2-hop (and 1-hop) accuracy against sequences seen.

    python benchmarks/probes/two_hop_walk_figure.py LOG.jsonl [LOG.jsonl ...] --out docs/figures/two_hop_walk.png

Each log is one run: a two_hop_walk.py log (its first line the settings, then one line per evaluation), or a
pipeline training log (``training_log.jsonl`` of the model rule, or micro_probe.py's) with its micro settings in
a ``.json`` file of the same name beside it (for a fine-tune, with ``sequences_before``: what the model it
started from had seen); its held-out top-1 on the most crowded worlds (four chains) is drawn. The curves are
kept in ``benchmarks/probes/two_hop_walk/``, so a run that did not cross its plateau stays a result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402


def read_run(path: Path) -> tuple[dict, list[dict]]:
    """(settings, records with ``sequences``, ``seconds``, ``acc_1hop`` and ``acc_2hop``)."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if "variant" in lines[0]:
        return lines[0], lines[1:]
    micro = json.loads(path.with_suffix(".json").read_text())
    settings = {"name": path.stem, **micro, "batch": micro.get("batch_size", 32)}
    # a fine-tune (micro_probe.py --init) continues a model that had already seen `sequences_before`
    before = micro.get("sequences_before", 0)
    records = [{"sequences": before + r["step"] * settings["batch"], "seconds": r.get("seconds", 0.0),
                **{f"acc_{hops}hop": value for hops in (1, 2) for key, value in r.items()
                   if key.startswith(f"heldout_top1_{hops}hop_") and key.endswith("chains")}} for r in lines]
    return settings, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    figure = Figure(figsize=(11, 5.6), layout="constrained")
    by_sequences, by_time = figure.subplots(1, 2, sharey=True)
    for index, path in enumerate(args.logs):
        settings, records = read_run(path)
        colour = matplotlib.colormaps["tab20"](index % 20)  # more runs than the ten default colours
        if "variant" in settings:
            network = {"gpt2": ", GPT-2 init, tied output", "guo": ", their init, untied output"}[
                settings.get("model", "gpt2")]
        else:  # a pipeline recipe: what it sets beyond the shape
            network = "".join([", PyTorch init" if settings.get("init") == "pytorch" else "",
                               f", first-hop loss at layer {settings['hop_layer']}" if settings.get("hop_layer")
                               else "",
                               ", fine-tuned" if settings.get("sequences_before") else "",
                               ", tied" if settings.get("tie_embeddings") else "",
                               ", constant lr" if settings.get("schedule") == "constant" else ", cosine lr"])
        label = (f"{settings['name']} ({settings['layers']}x{settings['hidden']}, {settings['heads']} head"
                 f"{'s' if settings['heads'] > 1 else ''}, batch {settings['batch']}{network})")
        for axis, x in ((by_sequences, "sequences"), (by_time, "seconds")):
            scale = 1e3 if x == "sequences" else 60
            for hops, style in ((2, "-"), (1, ":")):
                points = [(r[x] / scale, r[f"acc_{hops}hop"]) for r in records if f"acc_{hops}hop" in r]
                if points:
                    axis.plot(*zip(*points), style, color=colour, lw=1.2,
                              label=label if hops == 2 and axis is by_sequences else None)
    for axis, xlabel in ((by_sequences, "sequences seen (thousands)"), (by_time, "minutes, one CPU thread")):
        axis.axhline(0.25, color="0.5", lw=0.8, ls="--")
        axis.axhline(0.5, color="0.5", lw=0.8, ls="-.")
        axis.set_xlabel(xlabel)
        axis.set_ylim(0, 1.02)
    by_sequences.text(0.01, 0.26, "chance among 4 chain ends", fontsize=7, color="0.4",
                      transform=by_sequences.get_yaxis_transform())
    by_sequences.text(0.01, 0.51, "one-cue ceiling (balanced worlds)", fontsize=7, color="0.4",
                      transform=by_sequences.get_yaxis_transform())
    by_sequences.set_ylabel("held-out accuracy (solid 2-hop, dotted 1-hop)")
    figure.legend(fontsize=7, loc="outside lower center", ncols=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=130, bbox_inches="tight")


if __name__ == "__main__":
    main()
