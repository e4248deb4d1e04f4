"""Where the KV channel loses what its upper bound has, block by block (a diagnosis, not a pipeline stage).

    python -m actbridge.kv.diagnose [--results results] [--map ridge] [--rows 300] [--mode relay]

For each receiver block ``j``, two swaps between the receiver's own cache of the sender's context (the upper
bound, ``kv_own``) and the mapped sender entries (``kv_sent``), every block sent:

* ``own, block j mapped``: the bound with only block ``j``'s entries through the map: what block ``j``'s map
  error alone costs;
* ``mapped, block j own``: the channel with only block ``j``'s entries exact: what fixing block ``j`` alone gains.

Both need the two models to cut the context into as many tokens (a shared tokenizer, as the micro pair's), since
one cache mixes both kinds of entries. Printed as a markdown table beside each block's held-out R² of the map.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq

from actbridge.kv.channel import Channel, kv_channel_rows
from actbridge.kv.conditions import Injected, KVCondition, RowEntries
from actbridge.kv.fit import FittedKVMap
from actbridge.markdown import table_lines


@dataclass
class OneBlockMapped(KVCondition):
    """The receiver's own cache of the context, block ``block`` replaced by the mapped sender entries."""

    block: int

    def injected(self, row: RowEntries) -> Injected:
        entries = list(row.own)
        entries[self.block] = row.sent[self.block]
        return Injected(entries, rotated=tuple(j != self.block for j in range(len(entries))), sent_only=False)


@dataclass
class OneBlockOwn(KVCondition):
    """The mapped sender entries, block ``block`` replaced by the receiver's own."""

    block: int

    def injected(self, row: RowEntries) -> Injected:
        entries = list(row.sent)
        entries[self.block] = row.own[self.block]
        return Injected(entries, rotated=tuple(j == self.block for j in range(len(entries))), sent_only=False)


def block_table(channel: Channel, examples, *, mode: str, seed: int = 0, batch_tokens: int = 16384
                ) -> tuple[pl.DataFrame, dict]:
    """Per receiver block: the map's held-out R² and the two swaps' mean scores (accuracy, first token, log-prob);
    and the mean scores of none, kv_sent and kv_own on the same rows."""
    n_blocks = channel.receiver_layout.num_layers
    swaps = {**{f"mapped@{j}": OneBlockMapped(j) for j in range(n_blocks)},
             **{f"own@{j}": OneBlockOwn(j) for j in range(n_blocks)}}
    rows = examples.filter(pc.equal(examples.column("mode"), mode))
    scored = pl.from_arrow(kv_channel_rows(channel, rows, conditions=["kv_sent", "kv_own"], layers_sent=n_blocks,
                                           seed=seed, batch_tokens=batch_tokens, unregistered=swaps))
    means = {r["condition"]: r for r in scored.group_by("condition").agg(
        pl.col("exact_match").mean(), pl.col("first_token_top").mean(), pl.col("gold_logprob").mean()).to_dicts()}
    out = []
    for j in range(n_blocks):
        out.append({"block": j, "sender block": channel.kv_map.sender_blocks[j],
                    "R² keys": channel.kv_map.keys[j].info["val_r2"], "R² values": channel.kv_map.values[j].info["val_r2"],
                    **{f"{what} {metric}": means[f"{prefix}@{j}"][column]
                       for what, prefix in (("own, j mapped:", "mapped"), ("mapped, j own:", "own"))
                       for metric, column in (("exact", "exact_match"), ("first", "first_token_top"),
                                              ("logprob", "gold_logprob"))}})
    reference = {name: means[name] for name in ("none", "kv_sent", "kv_own")}
    return pl.DataFrame(out), reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--map", default="ridge")
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--mode", default="relay")
    args = parser.parse_args()
    from actbridge.models.loading import load_for_job

    results = Path(args.results)
    sender, receiver = (load_for_job(results / "models" / side, "cpu", "float32", 0) for side in ("sender", "receiver"))
    channel = Channel.of(sender, receiver, FittedKVMap.load(results / "kv" / "maps" / args.map))
    examples = pq.read_table(results / "data" / "eval.parquet")
    examples = examples.filter(pc.equal(examples.column("mode"), args.mode)).slice(0, args.rows)
    table, reference = block_table(channel, examples, mode=args.mode)
    print(f"{args.mode}: " + ", ".join(f"{name} exact {r['exact_match']:.3f} first {r['first_token_top']:.3f} "
                                         f"logprob {r['gold_logprob']:.2f}" for name, r in reference.items()))
    print("\n".join(table_lines(table.columns, [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
                                                for row in table.iter_rows()])))


if __name__ == "__main__":
    main()
