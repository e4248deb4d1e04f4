"""The KV channel on eval: every condition of every ``asymmetric`` and ``relay`` example, scored as the residual
channel's rows are (exact match, gold log-prob, rank, first answer token), paired with ``none``.

Per batch of examples, one sender pass over head + context (each example's own and its shuffled partner's)
and one receiver pass over head + its own reading of the context fill the entries every condition draws from.
Then one packed receiver pass scores, for each (example, condition), its tail and candidates against a cache
of head + that condition's entries (:class:`actbridge.models.edited_scoring.GivenPrefix`): the head and the
context are never read again per condition, and logits exist only where an answer token is predicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Mapping, Sequence

import pyarrow as pa
import torch

from actbridge.injection.controls import within_mode_derangement
from actbridge.kv import ROLE, kv_method, kv_pair, partial_examples
from actbridge.kv.conditions import KV_CONDITIONS, Entries, KVCondition, RowEntries, scored_labels
from actbridge.kv.entries import unrotated_entries
from actbridge.kv.fit import FittedKVMap, layout_shape
from actbridge.kv.layout import CacheLayout, rotary_tables, rotate
from actbridge.kv.segments import SegmentIds, segment_ids, segments_of
from actbridge.logs import Progress
from actbridge.models.edited_scoring import (Edits, Example, GivenPrefix, batch_tokens_or_default, fast_scores,
                                             trunk_cache)
from actbridge.models.encoding import with_gold
from actbridge.models.handle import ModelHandle
from actbridge.models.memory import batches_sized_by, check_batch_fits
from actbridge.schemas import JOB_SCHEMA, RESULT_SCHEMA

if TYPE_CHECKING:  # hints only
    from transformers import DynamicCache

NO_EDIT = Edits.identity(1)  # the packed pass edits no state here: its cache carries the condition


def sent_blocks(count: int, n_blocks: int) -> list[int]:
    """The ``count`` receiver blocks centred on the middle of the stack (KVComm finds the middle ones carry
    most): all of them for ``count == n_blocks``."""
    if not 1 <= count <= n_blocks:
        raise ValueError(f"config key kv.layers_sent: {count} blocks asked for, the receiver has {n_blocks}")
    start = (n_blocks - count) // 2
    return list(range(start, start + count))


@dataclass(frozen=True)
class Channel:
    """Both models and the fitted map, checked against each other once."""

    sender: ModelHandle
    receiver: ModelHandle
    kv_map: FittedKVMap
    sender_layout: CacheLayout
    receiver_layout: CacheLayout

    @classmethod
    def of(cls, sender: ModelHandle, receiver: ModelHandle, kv_map: FittedKVMap) -> "Channel":
        sender_layout = CacheLayout.of(sender.model, role="sender")
        receiver_layout = CacheLayout.of(receiver.model)
        for side, layout, recorded in (("sender", sender_layout, kv_map.sender_shape),
                                       ("receiver", receiver_layout, kv_map.receiver_shape)):
            if layout_shape(layout) != dict(recorded):
                raise ValueError(f"the KV map was fitted for a {side} cache of shape {dict(recorded)}, "
                                 f"not this one's {layout_shape(layout)}: refit it")
        return cls(sender, receiver, kv_map, sender_layout, receiver_layout)


def _context_entries(handle: ModelHandle, layout: CacheLayout, ids: Sequence[SegmentIds],
                     blocks: Collection[int]) -> list[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Per example, block -> its context's (keys before rotation, values) [kv_heads, m, head_dim], for ``blocks``."""
    cache = trunk_cache(handle.model, [s.head + s.context for s in ids], handle.pad_id)
    entries = unrotated_entries(handle.model, layout, cache, blocks)
    return [{block: (keys[r, :, len(s.head): len(s.head) + len(s.context)],
                     values[r, :, len(s.head): len(s.head) + len(s.context)]) for block, (keys, values) in entries.items()}
            for r, s in enumerate(ids)]


@dataclass(frozen=True)
class OwnCache:
    """The receiver's pass over each example's head and its own reading of the context: the head every condition
    starts from and the entries of ``kv_own``, rotated as the pass left them."""

    cache: "DynamicCache"  # [examples, kv_heads, longest, head_dim] per block
    head_lengths: list[int]
    context_lengths: list[int]

    def context(self, example: int) -> Entries:
        h, m = self.head_lengths[example], self.context_lengths[example]
        return [(layer.keys[example, :, h:h + m], layer.values[example, :, h:h + m]) for layer in self.cache.layers]


def _own_cache(handle: ModelHandle, ids: Sequence[SegmentIds]) -> OwnCache:
    cache = trunk_cache(handle.model, [s.head + s.context for s in ids], handle.pad_id)
    return OwnCache(cache, [len(s.head) for s in ids], [len(s.context) for s in ids])


def _stacked_prefix(channel: Channel, own: OwnCache, row_examples: Sequence[int], injected: list,
                    blocks: Sequence[int]) -> GivenPrefix:
    """One cache of each row's head then its condition's entries (right padded), and which keys blocks outside
    ``blocks`` must not see. Per block a fixed number of tensor operations, whatever the rows: the rows start as
    copies of their example's own cache (its head, then the receiver's own context entries, which ``kv_own``
    keeps), and every condition's entries are written over them in one indexed copy, those before rotation
    rotated in one call."""
    layout, model = channel.receiver_layout, channel.receiver.model
    dtype, device = next(model.parameters()).dtype, next(model.parameters()).device
    head_lengths = [own.head_lengths[e] for e in row_examples]
    counts = [0 if inj is None else inj.entries[blocks[0]][0].shape[1] for inj in injected]
    lengths = [h + m for h, m in zip(head_lengths, counts)]
    width = max(lengths)
    rows = torch.as_tensor(row_examples, device=device)
    from transformers import DynamicCache

    cache = DynamicCache()
    sent = set(blocks)
    for block in range(layout.num_layers):
        layer = own.cache.layers[block]
        keys, values = (_fitted(tensor[rows], width) for tensor in (layer.keys, layer.values))
        placed = [r for r, inj in enumerate(injected) if inj is not None and counts[r]
                  and (not inj.sent_only or block in sent)]
        if placed:
            row_index = torch.as_tensor([r for r in placed for _ in range(counts[r])], device=device)
            columns = torch.as_tensor([head_lengths[r] + t for r in placed for t in range(counts[r])], device=device)
            new_keys = torch.cat([injected[r].entries[block][0].float() for r in placed], dim=1)  # [heads, Σm, d]
            new_values = torch.cat([injected[r].entries[block][1] for r in placed], dim=1)
            turning = torch.as_tensor([not injected[r].rotated_in(block) for r in placed for _ in range(counts[r])],
                                      device=device)
            if bool(turning.any()):
                cos, sin = rotary_tables(model, columns[turning][None], layout.layer_types[block])
                new_keys[:, turning] = rotate(new_keys[None, :, turning], cos, sin)[0]
            keys[row_index, :, columns] = new_keys.transpose(0, 1).to(dtype)
            values[row_index, :, columns] = new_values.transpose(0, 1).to(dtype)
        cache.update(keys, values, block)
    hidden = torch.zeros(len(injected), width, dtype=torch.bool)
    for r, inj in enumerate(injected):
        if inj is not None and inj.sent_only:
            hidden[r, head_lengths[r]: lengths[r]] = True
    hidden_layers = frozenset(range(layout.num_layers)) - sent
    return GivenPrefix(cache, torch.as_tensor(lengths), hidden_layers if hidden.any() else frozenset(), hidden)


def _fitted(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` [rows, heads, seq, d] cut or zero-padded to ``width`` positions (a new tensor either way)."""
    if tensor.shape[2] >= width:
        return tensor[:, :, :width].clone()
    return torch.nn.functional.pad(tensor, (0, 0, 0, width - tensor.shape[2]))


def _mapped(channel: Channel, entries: Mapping[int, Mapping[int, tuple]], blocks: Sequence[int]
            ) -> dict[int, Entries]:
    """Each example's sender context entries through the map, in the receiver blocks ``blocks`` (empty elsewhere:
    those blocks never see them); one map call per block for all the examples."""
    empty = torch.zeros(0)
    names = list(entries)
    out: dict[int, Entries] = {n: [(empty, empty)] * channel.receiver_layout.num_layers for n in names}
    counts = [next(iter(entries[n].values()))[0].shape[1] for n in names]
    for block in blocks:
        source = channel.kv_map.sender_blocks[block]
        keys, values = channel.kv_map.apply(block, torch.cat([entries[n][source][0] for n in names], dim=1),
                                            torch.cat([entries[n][source][1] for n in names], dim=1))
        for n, part_keys, part_values in zip(names, keys.split(counts, dim=1), values.split(counts, dim=1)):
            out[n] = [*out[n][:block], (part_keys, part_values), *out[n][block + 1:]]
    return out


def _mean(channel: Channel, count: int, blocks: Sequence[int], device) -> Entries:
    empty = torch.zeros(0)
    return [channel.kv_map.mean(block, count, device) if block in blocks else (empty, empty)
            for block in range(channel.receiver_layout.num_layers)]


def kv_channel_rows(channel: Channel, examples: pa.Table, *, conditions: Sequence[str], layers_sent: int,
                    seed: int, batch_tokens: int | None = None,
                    unregistered: Mapping[str, KVCondition] | None = None) -> pa.Table:
    """RESULT_SCHEMA rows of every scored condition (the baseline ``none`` included) of each ``asymmetric`` and
    ``relay`` example, with ``layers_sent`` receiver blocks sent (:func:`sent_blocks`).

    ``kv_shuffled`` takes the entries of another example of the same mode, drawn from ``seed``. Batches hold as
    many examples as fit ``batch_tokens`` padded tokens over their conditions' rows. ``unregistered``: condition
    objects scored after the registered ones, by name (the diagnoses of :mod:`actbridge.kv.diagnose`)."""
    batch_tokens = batch_tokens_or_default(batch_tokens)
    blocks = sent_blocks(layers_sent, channel.receiver_layout.num_layers)
    rows = partial_examples(examples)
    if rows.num_rows < 2:
        raise ValueError("the KV channel needs at least two asymmetric or relay examples (data.context_modes)")
    modes = rows.column("mode").to_pylist()
    segments = [segments_of(s, r) for s, r in zip(rows.column("sender_prompt").to_pylist(),
                                                  rows.column("receiver_prompt").to_pylist())]
    sender_ids, receiver_ids = segment_ids(channel.sender, segments), segment_ids(channel.receiver, segments)
    partner = within_mode_derangement(modes, seed)
    chosen = {**{name: KV_CONDITIONS[name]() for name in scored_labels(conditions)}, **(unregistered or {})}
    labels = list(chosen)
    named = [with_gold(c, a) for c, a in zip(rows.column("candidates").to_pylist(), rows.column("answer").to_pylist())]
    candidate_ids = [channel.receiver.continuation_ids(names) for names, _ in named]
    columns: dict[str, list] = {field.name: [] for field in RESULT_SCHEMA}
    ids, hops = rows.column("example_id").to_pylist(), rows.column("hops").to_pylist()
    progress = Progress(rows.num_rows, f"KV channel ({layers_sent} of {channel.receiver_layout.num_layers} blocks sent)")
    device = next(channel.receiver.model.parameters()).device

    def cost(n: int) -> tuple[int, int]:
        prefix = len(receiver_ids[n].head) + max(len(receiver_ids[n].context), len(sender_ids[n].context),
                                                 len(sender_ids[partner[n]].context))
        width = len(receiver_ids[n].tail) + sum(max(len(c) - 1, 0) for c in candidate_ids[n])
        return prefix, width

    def score(batch: list[int]) -> None:
        needed = sorted(set(batch) | {int(partner[n]) for n in batch})
        sources = {channel.kv_map.sender_blocks[block] for block in blocks}  # the sender blocks the map reads
        mapped = _mapped(channel, dict(zip(needed, _context_entries(channel.sender, channel.sender_layout,
                                                                    [sender_ids[n] for n in needed], sources))),
                         blocks)
        own = _own_cache(channel.receiver, [receiver_ids[n] for n in batch])
        injected, examples_packed = [], []
        for b, n in enumerate(batch):
            count = len(sender_ids[n].context)
            entries = RowEntries(sent=mapped[n], shuffled=mapped[int(partner[n])],
                                 mean=_mean(channel, count, blocks, device), own=own.context(b))
            for name in labels:
                inj = chosen[name].injected(entries)
                injected.append(inj)
                length = len(receiver_ids[n].head) + (0 if inj is None else inj.entries[blocks[0]][0].shape[1])
                examples_packed.append(Example([channel.receiver.pad_id] * length + receiver_ids[n].tail, length,
                                               candidate_ids[n]))
        prefix = _stacked_prefix(channel, own, [b for b in range(len(batch)) for _ in labels], injected, blocks)
        scores = fast_scores(channel.receiver.model, examples_packed, None,
                             [NO_EDIT] * len(examples_packed), channel.receiver.pad_id, prefix=prefix)
        for r, result in enumerate(scores):
            n, name = batch[r // len(labels)], labels[r % len(labels)]
            columns["example_id"].append(ids[n])
            columns["mode"].append(modes[n])
            columns["hops"].append(hops[n])
            columns["role"].append(ROLE)
            columns["condition"].append(name)
            columns["alpha"].append(None)
            for column, value in result.gold_scores(0, named[n][1]).items():
                columns[column].append(value)
            columns["n_candidates"].append(len(named[n][0]))
            for column in ("h_norm", "b_norm", "cos_hb", "perturbation"):
                columns[column].append(float("nan"))
        progress.update(len(batch))

    batches: list[list[int]] = [[]]
    longest_prefix = widest = 0
    for n in range(rows.num_rows):
        prefix, width = cost(n)
        grown = len(labels) * (len(batches[-1]) + 1) * (max(longest_prefix, prefix) + max(widest, width))
        if batches[-1] and grown > batch_tokens:
            batches.append([])
            longest_prefix = widest = 0
        batches[-1].append(n)
        longest_prefix, widest = max(longest_prefix, prefix), max(widest, width)
    peak = max(batches, key=lambda batch: len(batch) * max(sum(cost(n)) for n in batch))
    check_batch_fits(channel.receiver.model, tokens=len(labels) * len(peak) * max(sum(cost(n)) for n in peak),
                     keys_per_query=max(sum(cost(n)) for n in peak), key="batch_tokens", value=batch_tokens,
                     device=device)
    for batch in batches:
        with batches_sized_by("batch_tokens", batch_tokens):
            score(batch)
    return pa.table(columns, schema=RESULT_SCHEMA)


def tag_kv_rows(rows: pa.Table, *, kind: str, sent: str, blocks: int) -> pa.Table:
    """``kv_channel_rows`` tagged as an injection job's rows (JOB_SCHEMA): pair ``kv-<sent>``, method
    ``kv_<kind>``, ``receiver_layer`` the number of blocks sent, ``sender_layer`` -1 (every paired block)."""
    n = rows.num_rows
    tagged = {"pair": pa.array([kv_pair(sent)] * n, pa.string()), "sender_layer": pa.array([-1] * n, pa.int16()),
              "receiver_layer": pa.array([blocks] * n, pa.int16()),
              "method": pa.array([kv_method(kind)] * n, pa.string()), "seed": pa.array([0] * n, pa.int32())}
    return pa.table({**tagged, **{name: rows.column(name) for name in rows.column_names}}, schema=JOB_SCHEMA)
