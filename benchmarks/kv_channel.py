"""The KV channel's eval job against its ideal, and against the residual channel, per eval row.

    python benchmarks/kv_channel.py [--results results] [--map ridge] [--rows 200] [--threads 1]

On a finished run's models and fitted map (``results/models/{sender,receiver}``, ``results/kv/maps/<map>``):

* **ours**: :func:`actbridge.kv.channel.kv_channel_rows` on ``--rows`` asymmetric and relay eval rows with every
  default condition and every block sent, wall time per row;
* **ideal**: the tokens no implementation can skip, at the rate each model runs a plain batched trunk forward
  over whole prompts in this process (same threads and dtype): per row one sender pass over head + context
  (and one for its shuffled partner), one receiver pass over head + context, and per condition the tail and
  the candidates' tokens but the last. ``ideal / ours`` is the target (≥ 0.8);
* **naive**: per condition and candidate, a whole receiver forward of head + context + tail + candidate (what
  a cache-less implementation runs), at the same rate;
* the residual channel's injection jobs of the same run, per eval row and per condition row, from Snakemake's
  benchmark files (``results/benchmarks/injection``), beside the KV channel's (``results/benchmarks/kv``).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from actbridge.kv import partial_examples  # noqa: E402
from actbridge.kv.channel import Channel, kv_channel_rows  # noqa: E402
from actbridge.kv.conditions import default_conditions, scored_labels  # noqa: E402
from actbridge.models.edited_scoring import trunk_cache  # noqa: E402
from actbridge.kv.fit import FittedKVMap  # noqa: E402
from actbridge.kv.segments import segment_ids, segments_of  # noqa: E402
from actbridge.models.encoding import with_gold  # noqa: E402
from actbridge.models.loading import load_for_job  # noqa: E402


def trunk_rate(handle, sequences, *, batch_tokens: int, repeats: int = 3) -> float:
    """Tokens per second of plain batched trunk forwards over ``sequences`` (best of ``repeats``)."""
    batches, batch, longest = [], [], 0
    for sequence in sequences:
        if batch and max(longest, len(sequence)) * (len(batch) + 1) > batch_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(sequence)
        longest = max(longest, len(sequence))
    batches.append(batch)
    tokens = sum(len(s) for s in sequences)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for chunk in batches:
            trunk_cache(handle.model, chunk, handle.pad_id)
        synchronize()
        best = min(best, time.perf_counter() - start)
    return tokens / best


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def job_seconds(folder: Path) -> float:
    total = 0.0
    for tsv in folder.rglob("*.tsv"):
        with tsv.open() as handle:
            total += float(next(csv.DictReader(handle, delimiter="\t"))["s"])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--map", default="ridge")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-tokens", type=int, default=16384)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    results = Path(args.results)
    torch.set_num_threads(args.threads)
    sender, receiver = (load_for_job(results / "models" / side, args.device, args.dtype, args.threads)
                        for side in ("sender", "receiver"))
    channel = Channel.of(sender, receiver, FittedKVMap.load(results / "kv" / "maps" / args.map))
    columns = ["example_id", "mode", "hops", "sender_prompt", "receiver_prompt", "answer", "candidates"]
    rows = partial_examples(pq.read_table(results / "data" / "eval.parquet", columns=columns)).slice(0, args.rows)
    conditions = default_conditions()
    k = len(scored_labels(conditions))
    kv_channel_rows(channel, rows.slice(0, 8), conditions=conditions, layers_sent=channel.receiver_layout.num_layers,
                    seed=0, batch_tokens=args.batch_tokens)  # warm-up
    start = time.perf_counter()
    kv_channel_rows(channel, rows, conditions=conditions, layers_sent=channel.receiver_layout.num_layers, seed=0,
                    batch_tokens=args.batch_tokens)
    ours = time.perf_counter() - start

    segments = [segments_of(s, r) for s, r in zip(rows.column("sender_prompt").to_pylist(),
                                                  rows.column("receiver_prompt").to_pylist())]
    sender_ids, receiver_ids = segment_ids(sender, segments), segment_ids(receiver, segments)
    candidates = [receiver.continuation_ids(with_gold(c, a)[0]) for c, a in
                  zip(rows.column("candidates").to_pylist(), rows.column("answer").to_pylist())]
    whole_sender = [s.head + s.context for s in sender_ids]
    whole_receiver = [s.head + s.context + s.tail for s in receiver_ids]
    rate_s = trunk_rate(sender, whole_sender, batch_tokens=args.batch_tokens)
    rate_r = trunk_rate(receiver, whole_receiver, batch_tokens=args.batch_tokens)
    sender_tokens = 2 * sum(len(s) for s in whole_sender)
    receiver_tokens = sum(len(s.head) + len(s.context) for s in receiver_ids) + k * sum(
        len(s.tail) + sum(max(len(c) - 1, 0) for c in cands) for s, cands in zip(receiver_ids, candidates))
    ideal = sender_tokens / rate_s + receiver_tokens / rate_r
    naive_tokens = k * sum(len(s) * len(cands) + sum(len(c) for c in cands)
                           for s, cands in zip(whole_receiver, candidates))
    naive = k * sum(len(s) for s in whole_sender) / rate_s + naive_tokens / rate_r
    n = rows.num_rows
    print(f"{n} rows x {k} conditions, {args.device}, {args.threads} thread(s), {args.dtype}; trunk rate sender {rate_s:,.0f} tok/s, "
          f"receiver {rate_r:,.0f} tok/s")
    print(f"ours  {1000 * ours / n:8.2f} ms/row   ideal {1000 * ideal / n:8.2f} ms/row   ideal/ours {ideal / ours:.2f}")
    print(f"naive {1000 * naive / n:8.2f} ms/row   naive/ours {naive / ours:.1f}x")
    residual, kv = results / "benchmarks" / "injection", results / "benchmarks" / "kv" / "injection"
    if residual.is_dir() and kv.is_dir():
        eval_rows = pq.read_metadata(results / "data" / "eval.parquet").num_rows
        injected = sum(pq.read_metadata(p).num_rows for p in (results / "injection").rglob("*.parquet"))
        kv_rows = sum(pq.read_metadata(p).num_rows for p in (results / "kv" / "injection").rglob("*.parquet"))
        print(f"run's jobs: residual {job_seconds(residual):.0f} s for {injected:,} condition rows "
              f"({1000 * job_seconds(residual) / injected:.2f} ms each); KV {job_seconds(kv):.0f} s for {kv_rows:,} "
              f"({1000 * job_seconds(kv) / kv_rows:.2f} ms each); eval has {eval_rows} rows")


if __name__ == "__main__":
    main()
