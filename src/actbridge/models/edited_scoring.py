"""Edit one residual-stream state and score answers, computing the clean prefix once.

Convention: ``layer`` indexes HF ``hidden_states``. For ``layer < L`` the edit
changes the input of decoder block ``layer`` (0 = the embedding output); for
``layer == L`` it changes the final-norm output that HF reports as
``hidden_states[L]``.

An edit at position p changes nothing before p. The fast path therefore runs
the prompt's first p tokens once per example (keeping their key/value cache),
then, in one row per example against that cache, the rest of the prompt once
per edit and each candidate answer's tokens but the last once per edit (the
first is predicted by the prompt's last position). ``naive_*`` runs the whole
prompt and candidate per (edit, candidate) with the same hook: the reference
the fast path is tested against.

An edit has the linear form ``h' = keep * h + s * vector`` with ``s = ||h||`` when
``norm_scaled`` and 1 otherwise, where ``h`` is the clean state at (layer, p),
and may also remove h's component in a subspace (``Edits.bases``). That covers
additive, replacement, norm-rescaled, interpolating and subspace injection
without a separate code path per condition. A condition that must see h to
decide its edit gives a batched transform instead (``StateTransform``): it runs
once per batch on every state it edits, in the same hook, on both paths.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

from actbridge.config import schema_default
from actbridge.models.cache_api import with_cache
from actbridge.models.encoding import with_gold
from actbridge.models.heads import token_scores
from actbridge.models.padding import right_padded

if TYPE_CHECKING:  # hints only
    from transformers import Cache, DynamicCache, PreTrainedModel

    from actbridge.logs import Progress
    from actbridge.models.handle import ModelHandle


# A condition's own edit of the state, batched: (clean states h [m, d], its source vectors [m, d]) -> h' [m, d].
StateTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Edits:
    """K edits of one example's state. The linear form (the fast path, every built-in condition):
    ``h' = keep * h + (||h|| if norm_scaled else 1) * vector``, minus ``U U^T h`` for an edit with a basis
    ``U`` [d, r] (orthonormal columns: h's component in a subspace removed). An edit with a transform
    ``f`` is ``h' = f(h, source)`` instead: a condition that must see h (see ``StateTransform``)."""

    keep: torch.Tensor  # [K]
    vector: torch.Tensor  # [K, d]
    norm_scaled: torch.Tensor  # [K] bool
    bases: tuple[torch.Tensor | None, ...] = ()  # per edit (or () for none): U [d, r] whose component is removed
    transforms: tuple[StateTransform | None, ...] = ()  # per edit (or () for none)
    sources: torch.Tensor | None = None  # [K, d]: the transforms' second argument (rows of other edits unused)

    def __len__(self) -> int:
        return len(self.keep)

    def projected(self) -> list[int]:
        """Indices of the edits that remove h's component in a subspace."""
        return [k for k, basis in enumerate(self.bases) if basis is not None]

    @classmethod
    def identity(cls, d: int, k: int = 1) -> "Edits":
        return cls(torch.ones(k), torch.zeros(k, d), torch.zeros(k, dtype=torch.bool))


@dataclass(frozen=True)
class Example:
    """One prompt, the token position to edit, and the candidate answers' token ids."""

    prompt_ids: list[int]
    position: int
    candidates: list[list[int]]


@dataclass(frozen=True)
class CandidateScores:
    """Per example, arrays of shape [K edits, C candidates]."""

    logprob: np.ndarray  # summed log-probability of the candidate's tokens
    exact: np.ndarray  # bool: greedy decoding reproduces the candidate (arg-max at every token)
    first_logprob: np.ndarray  # log-probability of the candidate's first token (predicted by the prompt's last)
    first_tokens: np.ndarray  # [C] int: each candidate's first token id
    clean_state: np.ndarray | None = None  # [d]: the state at the edit site before any edit

    def gold_rank(self, edit: int, gold: int) -> int:
        """1 + how many candidates score above the gold one under ``edit``."""
        return int(1 + np.sum(self.logprob[edit] > self.logprob[edit, gold]))

    def gold_scores(self, edit: int, gold: int) -> dict:
        """The gold answer's per-example score columns under ``edit``, as the injection and causal rows hold them."""
        return {"exact_match": bool(self.exact[edit, gold]), "gold_logprob": float(self.logprob[edit, gold]),
                "gold_rank": self.gold_rank(edit, gold), "first_token_top": self.first_token_top(edit, gold),
                "first_token_logprob": float(self.first_logprob[edit, gold])}

    def first_token_top(self, edit: int, gold: int) -> bool:
        """Whether the gold answer's first token is the most likely of the candidates' first tokens under ``edit``.

        Candidates that share the gold's first token are the same token at the same position, so they never
        outrank it: where the gold shares its first token with a distractor, this metric cannot tell them
        apart and counts the shared token (the dataset statistics report how often that happens)."""
        others = self.first_tokens != self.first_tokens[gold]
        return not bool(np.any(self.first_logprob[edit, others] > self.first_logprob[edit, gold]))


def _trunk_part(model: "PreTrainedModel", names: Sequence[str], kind: type, what: str) -> torch.nn.Module:
    """The first of ``names`` on the model's trunk that is a ``kind`` (HF names differ by architecture)."""
    for name in names:
        module = getattr(model.base_model, name, None)
        if isinstance(module, kind):
            return module
    raise ValueError(f"cannot find the {what} of {type(model).__name__} (looked for {list(names)})")


def decoder_layers(model: "PreTrainedModel") -> torch.nn.ModuleList:
    """The stack of decoder blocks: GPT-NeoX and Llama ``layers``, GPT-2 ``h``, others ``blocks``."""
    return _trunk_part(model, ("layers", "h", "blocks"), torch.nn.ModuleList, "decoder blocks")


def final_norm(model: "PreTrainedModel") -> torch.nn.Module:
    """The norm after the last block: GPT-NeoX ``final_layer_norm``, Llama ``norm``, GPT-2 ``ln_f``."""
    return _trunk_part(model, ("final_layer_norm", "norm", "ln_f"), torch.nn.Module, "final norm")


@dataclass(frozen=True)
class Projections:
    """The edits (by index among a batch's edits) that remove h's component in a subspace, and each one's
    basis [m, d, r] (bases of fewer columns padded with zero columns, which remove nothing)."""

    edits: torch.Tensor  # [m] long
    bases: torch.Tensor  # [m, d, r]

    @classmethod
    def gather(cls, per_edit: Sequence[tuple[int, torch.Tensor]]) -> "Projections | None":
        """From (edit index, basis [d, r]) pairs; None where no edit projects."""
        if not per_edit:
            return None
        width = max(basis.shape[1] for _, basis in per_edit)
        bases = torch.stack([torch.nn.functional.pad(basis, (0, width - basis.shape[1])) for _, basis in per_edit])
        return cls(torch.as_tensor([n for n, _ in per_edit], dtype=torch.long), bases)

    def to(self, device) -> "Projections":
        return Projections(self.edits.to(device), self.bases.to(device))


@dataclass(frozen=True)
class Transforms:
    """The edits (by index among a batch's edits) made by a condition's transform, one group per transform:
    each transform runs once per batch, on every state it edits."""

    groups: tuple[tuple[StateTransform, torch.Tensor, torch.Tensor], ...]  # (transform, edits [m], sources [m, d])

    @classmethod
    def gather(cls, per_edit: Sequence[tuple[int, StateTransform, torch.Tensor]]) -> "Transforms | None":
        """From (edit index, transform, source [d]) triples; None where no edit has a transform."""
        grouped: dict[StateTransform, list[tuple[int, torch.Tensor]]] = {}
        for n, transform, source in per_edit:
            grouped.setdefault(transform, []).append((n, source))
        if not grouped:
            return None
        return cls(tuple((transform, torch.as_tensor([n for n, _ in members], dtype=torch.long),
                          torch.stack([source for _, source in members])) for transform, members in grouped.items()))

    def to(self, device) -> "Transforms":
        return Transforms(tuple((f, edits.to(device), sources.to(device)) for f, edits, sources in self.groups))


def apply_edits(hidden: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor,
                vector: torch.Tensor, norm_scaled: torch.Tensor, projections: Projections | None = None,
                transforms: Transforms | None = None) -> torch.Tensor:
    """``hidden`` [batch, seq, d] with the state at each (rows[n], positions[n]) edited by edit n.

    An edit with keep=1 and vector=0 leaves its state unchanged. A transform runs in at least float32 (the
    states may be bfloat16) and its result is cast back.
    """
    clean = hidden[rows, positions]  # [n, d]
    scale = torch.where(norm_scaled, clean.norm(dim=-1), torch.ones_like(keep, dtype=clean.dtype))
    edited = keep.to(clean.dtype)[:, None] * clean + scale[:, None] * vector.to(clean.dtype)
    if projections is not None:
        bases = projections.bases.to(clean.dtype)
        coefficients = torch.einsum("md,mdr->mr", clean[projections.edits], bases)
        edited = edited.index_add(0, projections.edits, -torch.einsum("mr,mdr->md", coefficients, bases))
    if transforms is not None:
        precision = torch.promote_types(clean.dtype, torch.float32)
        for transform, edits, sources in transforms.groups:
            changed = transform(clean[edits].to(precision), sources.to(precision))
            edited = edited.index_copy(0, edits, changed.to(clean.dtype))
    out = hidden.clone()
    out[rows, positions] = edited
    return out


@contextlib.contextmanager
def residual_edit(model: "PreTrainedModel", layer: int, rows: torch.Tensor, positions: torch.Tensor,
                  keep: torch.Tensor, vector: torch.Tensor, norm_scaled: torch.Tensor,
                  recorded: list[torch.Tensor] | None = None, *, projections: Projections | None = None,
                  transforms: Transforms | None = None) -> Iterator[None]:
    """Apply the edits to ``hidden_states[layer]`` during forward passes inside the block.

    ``recorded``, if given, receives the clean states [n, d] at the edited sites, before the edit.

    The hooks accept a block's input given positionally or by keyword, so they
    do not depend on whether the blocks return tensors or tuples (which
    changed in transformers 5).
    """
    blocks = decoder_layers(model)
    n_layers = len(blocks)
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer {layer} out of range 0..{n_layers}")

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        device = hidden.device
        if recorded is not None:
            recorded.append(hidden[rows.to(device), positions.to(device)].detach().float().cpu())
        return apply_edits(hidden, rows.to(device), positions.to(device), keep.to(device), vector.to(device),
                           norm_scaled.to(device), None if projections is None else projections.to(device),
                           None if transforms is None else transforms.to(device))

    if layer < n_layers:
        def pre_hook(module, args, kwargs):
            if args:
                return (edit(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}
        handle = blocks[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        def post_hook(module, args, output):
            return edit(output)
        handle = final_norm(model).register_forward_hook(post_hook)
    try:
        yield
    finally:
        handle.remove()


def score_continuation(logprobs: torch.Tensor, row: int, first_prediction: int, targets: Sequence[int]
                       ) -> tuple[float, bool, float]:
    """Teacher-forced score of ``targets`` in row ``row`` of ``logprobs`` [batch, seq, vocab] (the naive path).

    ``targets[j]`` is predicted at position ``first_prediction + j``. Returns the
    summed log-probability, whether every target is the arg-max there (greedy
    decoding reproduces the continuation) and the first target's log-probability.
    """
    positions = torch.arange(first_prediction, first_prediction + len(targets))
    target = torch.as_tensor(targets, dtype=torch.long)
    token_logprobs = logprobs[row, positions, target]
    return (float(token_logprobs.sum()), bool((logprobs[row, positions].argmax(-1) == target).all()),
            float(token_logprobs[0]))


def _rows(examples: Sequence[Example], edits: Sequence[Edits]) -> list[tuple[int, int, int]]:
    """(example, edit, candidate) for every scored row, example-major."""
    return [(i, k, c) for i, example in enumerate(examples) for k in range(len(edits[i]))
            for c in range(len(example.candidates))]


def _collect(examples: Sequence[Example], edits: Sequence[Edits], rows: Sequence[tuple[int, int, int]],
             logprob: Sequence[float], exact: Sequence[bool], first_logprob: Sequence[float],
             clean_states: Sequence[np.ndarray | None]) -> list[CandidateScores]:
    """Scores per example from per-row results; ``clean_states[i]`` is example i's state before any edit."""
    def empty(i: int, example: Example, dtype=np.float64) -> np.ndarray:
        return np.zeros((len(edits[i]), len(example.candidates)), dtype=dtype)

    out = [CandidateScores(empty(i, e), empty(i, e, bool), empty(i, e),
                           np.asarray([c[0] if c else -1 for c in e.candidates], dtype=np.int64), clean_states[i])
           for i, e in enumerate(examples)]
    for (i, k, c), lp, ex, first in zip(rows, logprob, exact, first_logprob):
        out[i].logprob[k, c] = lp
        out[i].exact[k, c] = ex
        out[i].first_logprob[k, c] = first
    return out


def _edit_tensors(edits: Sequence[Edits], rows: list[tuple[int, int, int]]):
    keep = torch.stack([edits[i].keep[k] for i, k, _ in rows])
    vector = torch.stack([edits[i].vector[k] for i, k, _ in rows])
    norm_scaled = torch.stack([edits[i].norm_scaled[k] for i, k, _ in rows])
    return keep, vector, norm_scaled


def _projections(edits: Sequence[Edits], rows: Sequence[tuple[int, int]]) -> Projections | None:
    """The projecting edits among ``rows`` ((example, edit) per batch edit, in order)."""
    return Projections.gather([(n, edits[i].bases[k]) for n, (i, k) in enumerate(rows)
                               if edits[i].bases and edits[i].bases[k] is not None])


def _transforms(edits: Sequence[Edits], rows: Sequence[tuple[int, int]]) -> Transforms | None:
    """The transformed edits among ``rows`` ((example, edit) per batch edit, in order)."""
    return Transforms.gather([(n, edits[i].transforms[k], edits[i].sources[k]) for n, (i, k) in enumerate(rows)
                              if edits[i].transforms and edits[i].transforms[k] is not None])


def edited_states(clean: torch.Tensor, edits: Edits) -> torch.Tensor:
    """[K, d] each of ``edits`` applied to one clean state ``clean`` [d], as the forward pass applies them."""
    k = len(edits)
    rows = [(0, n) for n in range(k)]
    return apply_edits(clean.expand(k, 1, -1), torch.arange(k), torch.zeros(k, dtype=torch.long), edits.keep,
                       edits.vector, edits.norm_scaled, _projections([edits], rows), _transforms([edits], rows))[:, 0]


@torch.inference_mode()
def naive_scores(model: "PreTrainedModel", examples: Sequence[Example], layer: int, edits: Sequence[Edits],
                 pad_id: int = 0) -> list[CandidateScores]:
    """Reference: a full hooked forward of prompt + candidate for every (edit, candidate) row."""
    rows = _rows(examples, edits)
    device = next(model.parameters()).device
    sequences = [examples[i].prompt_ids + examples[i].candidates[c] for i, _, c in rows]
    input_ids, attention = right_padded(sequences, pad_id)
    positions = torch.as_tensor([examples[i].position for i, _, _ in rows])
    recorded: list[torch.Tensor] = []
    sites = [(i, k) for i, k, _ in rows]
    with residual_edit(model, layer, torch.arange(len(rows)), positions, *_edit_tensors(edits, rows), recorded,
                       projections=_projections(edits, sites), transforms=_transforms(edits, sites)):
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
    scored = [score_continuation(logprobs, r, len(examples[i].prompt_ids) - 1, examples[i].candidates[c])
              for r, (i, _, c) in enumerate(rows)]
    first_row: dict[int, int] = {}
    for n, (i, _, _) in enumerate(rows):
        first_row.setdefault(i, n)
    clean_states = [recorded[0][first_row[i]].numpy() if i in first_row else None for i in range(len(examples))]
    return _collect(examples, edits, rows, [s[0] for s in scored], [s[1] for s in scored], [s[2] for s in scored],
                    clean_states)


@dataclass(frozen=True)
class PackedRows:
    """One row per example after its prefix: every edit's suffix, then every candidate's extra tokens.

    Arrays are [batch, width]; padding has ``block`` -1. An *edit block*
    holds the prompt from the edit position on (the edit applies to its first
    token); a *candidate block* holds a candidate's tokens but the last, and
    reads its edit block whole (``parent``), so the suffix runs once per edit,
    not once per (edit, candidate), and a one-token candidate costs nothing.
    """

    input_ids: torch.Tensor
    block: torch.Tensor  # block index within the row, -1 on padding
    offset: torch.Tensor  # token index within its block
    parent: torch.Tensor  # for candidate-block tokens, their edit block; else -1
    position_ids: torch.Tensor
    edit_starts: list[list[int]]  # per example, where each edit block starts
    # per scored (example, edit, candidate) row: the packed positions whose logits predict its tokens
    predictors: list[tuple[int, int, int, list[int]]]


def pack_rows(examples: Sequence[Example], edit_counts: Sequence[int], pad_id: int) -> PackedRows:
    ids, blocks, offsets, parents, positions, edit_starts, predictors = [], [], [], [], [], [], []
    for i, (example, n_edits) in enumerate(zip(examples, edit_counts)):
        suffix = example.prompt_ids[example.position:]
        row_ids, row_block, row_offset, row_parent, row_pos, starts = [], [], [], [], [], []

        def add(tokens: Sequence[int], block: int, parent: int, first_position: int) -> int:
            start = len(row_ids)
            row_ids.extend(tokens)
            row_block.extend([block] * len(tokens))
            row_offset.extend(range(len(tokens)))
            row_parent.extend([parent] * len(tokens))
            row_pos.extend(range(first_position, first_position + len(tokens)))
            return start

        for k in range(n_edits):
            starts.append(add(suffix, k, -1, example.position))
        block = n_edits
        end = example.position + len(suffix)  # the prompt's length: the first answer token's position
        for k in range(n_edits):
            last_of_suffix = starts[k] + len(suffix) - 1
            for c, candidate in enumerate(example.candidates):
                predicting = [last_of_suffix] if candidate else []
                if len(candidate) > 1:
                    first = add(candidate[:-1], block, k, end)
                    predicting += list(range(first, first + len(candidate) - 1))
                    block += 1
                predictors.append((i, k, c, predicting))
        ids.append(row_ids)
        blocks.append(row_block)
        offsets.append(row_offset)
        parents.append(row_parent)
        positions.append(row_pos)
        edit_starts.append(starts)
    width = max(len(r) for r in ids)

    def padded(rows: list[list[int]], fill: int) -> torch.Tensor:
        out = torch.full((len(rows), width), fill, dtype=torch.long)
        for r, values in enumerate(rows):
            out[r, : len(values)] = torch.as_tensor(values, dtype=torch.long)
        return out

    return PackedRows(padded(ids, pad_id), padded(blocks, -1), padded(offsets, 0), padded(parents, -1),
                      padded(positions, 0), edit_starts, predictors)


def packed_attention_mask(rows: PackedRows, prefix_lengths: torch.Tensor, prefix_width: int,
                          dtype: torch.dtype, sliding_window: int | None = None) -> torch.Tensor:
    """Additive 4D mask [batch, 1, width, prefix_width + width] for the packed pass.

    A query sees its row's real prefix keys (k < prefix_lengths[r]); in the
    packed part, the keys of its own block at or before itself, and every key
    of its parent block. So each edit block continues the prefix as if it ran
    alone, and each candidate block continues its edit block.
    """
    block, parent, offset = rows.block, rows.parent, rows.offset
    key_real = (block >= 0)[:, None, :]
    same_block = (block[:, :, None] == block[:, None, :]) & (offset[:, None, :] <= offset[:, :, None])
    from_parent = parent[:, :, None] == block[:, None, :]
    packed_ok = (same_block | from_parent) & key_real  # [batch, queries, keys]
    prefix_ok = torch.arange(prefix_width)[None, :] < prefix_lengths[:, None]  # [batch, prefix]
    allowed = torch.cat([prefix_ok[:, None, :].expand(-1, block.shape[1], -1), packed_ok], dim=2)
    if sliding_window is not None:  # a sliding-attention layer sees only the last ``sliding_window`` positions
        key_positions = torch.cat([torch.arange(prefix_width)[None, :].expand(len(block), -1), rows.position_ids], 1)
        allowed &= (rows.position_ids[:, :, None] - key_positions[:, None, :]) < sliding_window
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


@dataclass(frozen=True)
class ScoredTokens:
    """Every candidate token of a packed pass; ``owners`` index ``predictors``."""

    logprob: torch.Tensor  # [tokens] float32 log-probability of the candidate's token where it is predicted
    is_argmax: torch.Tensor  # [tokens] bool: the token is the arg-max there
    owners: torch.Tensor  # [tokens] which (example, edit, candidate) row the token belongs to
    predictors: list[tuple[int, int, int, list[int]]]


def prefix_cache(model: "PreTrainedModel", examples: Sequence[Example], pad_id: int
                 ) -> tuple["Cache | None", torch.Tensor]:
    """Key/value cache of each example's prompt before its edit position (trunk only, never a gradient:
    an edit changes nothing before it), and the prefix lengths [batch]. ``None`` when every prefix is empty."""
    prefix_lengths = torch.as_tensor([e.position for e in examples])
    if int(prefix_lengths.max()) == 0:
        return None, prefix_lengths
    return trunk_cache(model, [e.prompt_ids[: e.position] for e in examples], pad_id), prefix_lengths


def trunk_cache(model: "PreTrainedModel", sequences: Sequence[Sequence[int]], pad_id: int) -> "DynamicCache":
    """The key/value cache of one trunk pass over ``sequences``, right padded (a token's position is its index):
    keys and values only, no logits over the vocabulary and never a gradient.

    A cache without the model's config keeps every key, also in sliding-window layers (which would drop all but
    the last window's): whoever reads it gives each layer the keys it may see (the packed pass's masks)."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids, mask = right_padded([list(s) for s in sequences], pad_id)
    cache = DynamicCache()
    with torch.no_grad():
        model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device),
                         **with_cache(model.base_model, cache), use_cache=True)
    return cache


def _to(mask: "torch.Tensor | dict[str, torch.Tensor]", device) -> "torch.Tensor | dict[str, torch.Tensor]":
    return {kind: m.to(device) for kind, m in mask.items()} if isinstance(mask, dict) else mask.to(device)


def sliding_window(model: "PreTrainedModel") -> int | None:
    """The window of the model's sliding-attention layers, if it has any."""
    config = model.config.get_text_config()
    if "sliding_attention" not in (getattr(config, "layer_types", None) or ()):
        return None
    return getattr(config, "sliding_window", None)


def packed_masks(model: "PreTrainedModel", rows: PackedRows, prefix_lengths: torch.Tensor,
                 dtype: torch.dtype) -> "torch.Tensor | dict[str, torch.Tensor]":
    """The packed pass's mask; for a model with sliding-window layers, one per layer type (as HF takes them)."""
    full = packed_attention_mask(rows, prefix_lengths, int(prefix_lengths.max()), dtype)
    window = sliding_window(model)
    if window is None:
        return full
    return {"full_attention": full,
            "sliding_attention": packed_attention_mask(rows, prefix_lengths, int(prefix_lengths.max()), dtype,
                                                       sliding_window=window)}


@dataclass(frozen=True)
class GivenPrefix:
    """A key/value cache built by the caller, placed before each example's suffix instead of the prompt's own
    prefix (the KV channel puts entries there that no prompt of the receiver produced).

    Row r's entries are the first ``lengths[r]`` of the cache's [batch, heads, width, head_dim] tensors (right
    padding after), at positions 0.. in that order; its example's ``position`` must equal ``lengths[r]``. The
    decoder blocks in ``hidden_layers`` do not see the keys ``hidden_keys`` [batch, width] marks: a block that
    is sent nothing attends as if those entries were not there.
    """

    cache: "Cache"
    lengths: torch.Tensor  # [batch]
    hidden_layers: frozenset[int] = frozenset()
    hidden_keys: torch.Tensor | None = None  # [batch, width] bool


def _hide_keys(mask: torch.Tensor, hidden_keys: torch.Tensor) -> torch.Tensor:
    """``mask`` [batch, 1, queries, keys] with the prefix keys ``hidden_keys`` [batch, width] disallowed."""
    hidden = torch.zeros(mask.shape[0], mask.shape[-1], dtype=torch.bool, device=mask.device)
    hidden[:, : hidden_keys.shape[1]] = hidden_keys.to(mask.device)
    return mask.masked_fill(hidden[:, None, None, :], torch.finfo(mask.dtype).min)


@contextlib.contextmanager
def hidden_prefix(model: "PreTrainedModel", mask: "torch.Tensor | dict[str, torch.Tensor]",
                  prefix: GivenPrefix | None) -> Iterator[None]:
    """While inside, the blocks in ``prefix.hidden_layers`` get ``mask`` (one per layer type, as HF hands them
    out) with ``prefix.hidden_keys`` disallowed; every other block gets ``mask`` itself."""
    if prefix is None or not prefix.hidden_layers:
        yield
        return
    blocks = decoder_layers(model)
    types = getattr(model.config.get_text_config(), "layer_types", None) or ["full_attention"] * len(blocks)
    hidden = ({kind: _hide_keys(m, prefix.hidden_keys) for kind, m in mask.items()} if isinstance(mask, dict)
              else _hide_keys(mask, prefix.hidden_keys))

    def hook_for(layer: int):
        replacement = hidden[types[layer]] if isinstance(hidden, dict) else hidden

        def pre_hook(module, args, kwargs):
            return args, {**kwargs, "attention_mask": replacement}
        return pre_hook

    handles = [blocks[layer].register_forward_pre_hook(hook_for(layer), with_kwargs=True)
               for layer in sorted(prefix.hidden_layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def exact_attention(device: torch.device):
    """Where the packed pass runs on CUDA, SDPA's math kernel: the memory-efficient kernel mis-scores packed rows
    against a prefix cache under a short sliding window (tests/test_cuda.py, Gemma-3), and the flash kernel takes no
    arbitrary mask. Elsewhere nothing changes."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def packed_token_logprobs(model: "PreTrainedModel", examples: Sequence[Example], layer: int | None,
                          edits: Sequence[Edits], pad_id: int = 0,
                          recorded: list[torch.Tensor] | None = None, *,
                          prefix: GivenPrefix | None = None) -> ScoredTokens:
    """The candidate tokens' log-probabilities under the edits, each piece of the work done once.

    One pass over the examples' prefixes (:func:`prefix_cache`) fills the key/value cache. One more pass
    runs, in each example's row against that cache, the rest of the prompt once per edit and then each
    candidate's tokens but the last once per edit, packed side by side with a mask that gives every block
    the context it would have alone (:func:`packed_attention_mask`); the cache is never copied. Logits are
    computed only where a candidate token is predicted. Gradients flow to the edit vectors (the bridge
    trained through the receiver uses that); ``recorded`` receives the clean states at the edit sites.

    ``layer`` None edits no state (the edits must then be identities). ``prefix``: a cache built by the caller
    (:class:`GivenPrefix`) instead of the prompts' own prefixes.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if prefix is None:
        cache, prefix_lengths = prefix_cache(model, examples, pad_id)
    else:
        cache, prefix_lengths = prefix.cache, prefix.lengths
    rows = pack_rows(examples, [len(e) for e in edits], pad_id)
    mask = _to(packed_masks(model, rows, prefix_lengths, dtype), device)
    edit_rows = torch.as_tensor([i for i, starts in enumerate(rows.edit_starts) for _ in starts])
    edit_positions = torch.as_tensor([start for starts in rows.edit_starts for start in starts])
    keep = torch.cat([e.keep for e in edits])
    vector = torch.cat([e.vector for e in edits])
    norm_scaled = torch.cat([e.norm_scaled for e in edits])
    sites = [(i, k) for i, e in enumerate(edits) for k in range(len(e))]
    edit = (contextlib.nullcontext() if layer is None else
            residual_edit(model, layer, edit_rows, edit_positions, keep, vector, norm_scaled, recorded,
                          projections=_projections(edits, sites), transforms=_transforms(edits, sites)))
    with edit, hidden_prefix(model, mask, prefix), exact_attention(device):
        final = model.base_model(input_ids=rows.input_ids.to(device), attention_mask=mask,
                                 position_ids=rows.position_ids.to(device), **with_cache(model.base_model, cache),
                                 use_cache=cache is not None).last_hidden_state  # [batch, width, d]
    # the vocabulary only at the packed positions that predict a candidate token, each projected once
    sites = sorted({(i, p) for i, _, _, predicting in rows.predictors for p in predicting})
    site_index = {site: n for n, site in enumerate(sites)}
    predictor, targets, owners = [], [], []
    for owner, (i, _, c, predicting) in enumerate(rows.predictors):
        predictor.extend(site_index[(i, p)] for p in predicting)
        targets.extend(examples[i].candidates[c])
        owners.extend([owner] * len(predicting))
    site_rows = torch.as_tensor([i for i, _ in sites], dtype=torch.long, device=device)
    site_columns = torch.as_tensor([p for _, p in sites], dtype=torch.long, device=device)
    scores = token_scores(model, final[site_rows, site_columns], torch.as_tensor(predictor, dtype=torch.long),
                          torch.as_tensor(targets, dtype=torch.long))
    return ScoredTokens(scores.logprob, scores.is_argmax, torch.as_tensor(owners, dtype=torch.long),
                        rows.predictors)


@torch.inference_mode()
def fast_scores(model: "PreTrainedModel", examples: Sequence[Example], layer: int | None, edits: Sequence[Edits],
                pad_id: int = 0, *, prefix: GivenPrefix | None = None) -> list[CandidateScores]:
    """Same scores as :func:`naive_scores` from :func:`packed_token_logprobs`. Work: prefix + edits x
    (suffix + candidate tokens beyond the first) tokens, instead of edits x candidates x whole sequences.
    ``layer`` None and ``prefix``: as there (no clean states are recorded without a layer)."""
    recorded: list[torch.Tensor] = []
    scored = packed_token_logprobs(model, examples, layer, edits, pad_id, recorded, prefix=prefix)
    token_logprob = scored.logprob.double().cpu().numpy()
    token_miss = (~scored.is_argmax).cpu().numpy()
    owners = scored.owners.numpy()
    owner_logprob = np.zeros(len(scored.predictors))
    owner_misses = np.zeros(len(scored.predictors), dtype=np.int64)
    np.add.at(owner_logprob, owners, token_logprob)
    np.add.at(owner_misses, owners, token_miss)
    # each owner's tokens are consecutive and in order, its first predicted by the prompt's last position
    owner_first = np.full(len(scored.predictors), np.nan)
    present, first_index = np.unique(owners, return_index=True)
    owner_first[present] = token_logprob[first_index]
    first_edit = np.cumsum([0] + [len(e) for e in edits])
    clean_states = [recorded[0][first_edit[i]].numpy() if recorded and len(edits[i]) else None
                    for i in range(len(examples))]
    return _collect(examples, edits, [(i, k, c) for i, k, c, _ in scored.predictors], owner_logprob,
                    owner_misses == 0, owner_first, clean_states)


def packed_width(example: Example, n_edits: int) -> int:
    """Tokens of an example's packed row: every edit's suffix and every candidate's tokens but the last."""
    suffix = len(example.prompt_ids) - example.position
    return n_edits * (suffix + sum(max(len(c) - 1, 0) for c in example.candidates))


def batch_cost(prefix: int, width: int, rows: int) -> int:
    """Padded tokens of a batch: its prefix pass and its packed pass."""
    return rows * (prefix + width)


def batch_tokens_or_default(batch_tokens: int | None) -> int:
    """``batch_tokens``, or the config's default where None (read when called: nothing reads the schema at import)."""
    return schema_default("batch_tokens") if batch_tokens is None else batch_tokens


def score_under_edits(handle: "ModelHandle", layer: int,
                      prompts: Sequence[str], positions: Sequence[int], answers: Sequence[str],
                      candidates: Sequence[Sequence[str]], edits_for: Callable[[int], Edits], *,
                      batch_tokens: int | None = None, batch_key: str = "batch_tokens", progress: "Progress | None" = None
                      ) -> Iterator[tuple[int, Edits, CandidateScores, list[str], int]]:
    """Score each prompt's candidate answers (the gold one added if missing) under its edits, in batches.

    Yields, in order, per example n: (n, its edits, its scores [K, C], the candidate names, the gold
    answer's index among them). A batch holds as many examples as fit in ``batch_tokens`` padded tokens
    (prefix pass plus packed pass, :func:`batch_cost`; an example above it runs alone), so memory follows
    the tokens, not the rows. ``edits_for(n)`` is called as its batch is filled: the edits of a whole
    split never sit in memory. Before the first batch its peak is estimated against the free memory, and
    running out of memory fails naming ``batch_key`` (:mod:`actbridge.models.memory`).
    """
    from actbridge.models.memory import batches_sized_by, check_batch_fits

    batch_tokens = batch_tokens_or_default(batch_tokens)
    model, pad_id = handle.model, handle.pad_id
    prompt_ids = handle.prompt_ids(prompts)
    batch: list[tuple[int, Example, Edits, list[str], int]] = []
    longest_prefix = widest = 0
    checked = False

    def flush():
        nonlocal checked
        if not checked:
            check_batch_fits(model, tokens=batch_cost(longest_prefix, widest, len(batch)),
                             keys_per_query=longest_prefix + widest, key=batch_key, value=batch_tokens,
                             device=next(model.parameters()).device)
            checked = True
        with batches_sized_by(batch_key, batch_tokens):
            scores = fast_scores(model, [e for _, e, *_ in batch], layer, [k for _, _, k, *_ in batch],
                                 pad_id=pad_id)
        for (n, _, example_edits, names, gold), score in zip(batch, scores):
            yield n, example_edits, score, names, gold
        if progress is not None:
            progress.update(len(batch))

    for n in range(len(prompts)):
        names, gold = with_gold(candidates[n], answers[n])
        example = Example(prompt_ids[n], int(positions[n]), handle.continuation_ids(names))
        example_edits = edits_for(n)
        width = packed_width(example, len(example_edits))
        if batch and batch_cost(max(longest_prefix, example.position), max(widest, width),
                                len(batch) + 1) > batch_tokens:
            yield from flush()
            batch, longest_prefix, widest = [], 0, 0
        batch.append((n, example, example_edits, names, gold))
        longest_prefix, widest = max(longest_prefix, example.position), max(widest, width)
    if batch:
        yield from flush()
