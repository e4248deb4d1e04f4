"""Edit one residual-stream state and score answers, computing the clean prefix once.

Convention: ``layer`` indexes HF ``hidden_states``. For ``layer < L`` the edit
changes the input of decoder block ``layer`` (0 = the embedding output); for
``layer == L`` it changes the final-norm output that HF reports as
``hidden_states[L]``.

An edit at position p changes nothing before p. The fast path therefore runs
the prompt's first p tokens once per example (keeping their key/value cache),
then runs only positions >= p for every (edit, candidate answer) pair, all of
an example's pairs packed into one row against that cache. ``naive_*`` runs
the whole sequence per row with the same hook: the reference the fast path is
tested against.

Every edit has the form ``h' = keep * h + s * vector`` with ``s = ||h||`` when
``norm_scaled`` and 1 otherwise, where ``h`` is the clean state at (layer, p).
That covers additive, replacement, norm-rescaled and interpolating injection
without a separate code path per condition.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

from actbridge.evaluation import score_continuation
from actbridge.padding import right_padded

if TYPE_CHECKING:  # hints only
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class Edits:
    """K edits of one example's state: ``h' = keep * h + (||h|| if norm_scaled else 1) * vector``."""

    keep: torch.Tensor  # [K]
    vector: torch.Tensor  # [K, d]
    norm_scaled: torch.Tensor  # [K] bool

    def __len__(self) -> int:
        return len(self.keep)

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
    clean_state: np.ndarray | None = None  # [d]: the state at the edit site before any edit


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


def apply_edits(hidden: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor,
                vector: torch.Tensor, norm_scaled: torch.Tensor) -> torch.Tensor:
    """``hidden`` [batch, seq, d] with the state at each (rows[n], positions[n]) edited by edit n.

    An edit with keep=1 and vector=0 leaves its state unchanged.
    """
    clean = hidden[rows, positions]  # [n, d]
    scale = torch.where(norm_scaled, clean.norm(dim=-1), torch.ones_like(keep, dtype=clean.dtype))
    edited = keep.to(clean.dtype)[:, None] * clean + scale[:, None] * vector.to(clean.dtype)
    out = hidden.clone()
    out[rows, positions] = edited
    return out


@contextlib.contextmanager
def residual_edit(model: "PreTrainedModel", layer: int, rows: torch.Tensor, positions: torch.Tensor,
                  keep: torch.Tensor, vector: torch.Tensor, norm_scaled: torch.Tensor,
                  recorded: list[torch.Tensor] | None = None) -> Iterator[None]:
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
                           norm_scaled.to(device))

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


def _rows(examples: Sequence[Example], edits: Sequence[Edits]) -> list[tuple[int, int, int]]:
    """(example, edit, candidate) for every scored row, example-major."""
    return [(i, k, c) for i, example in enumerate(examples) for k in range(len(edits[i]))
            for c in range(len(example.candidates))]


def _collect(examples: Sequence[Example], edits: Sequence[Edits], rows: list[tuple[int, int, int]],
             logprob: list[float], exact: list[bool], clean: torch.Tensor) -> list[CandidateScores]:
    """Scores per example; ``clean`` [rows, d] holds each row's state before its edit (the same within an example)."""
    first_row = {}
    for n, (i, _, _) in enumerate(rows):
        first_row.setdefault(i, n)
    out = [CandidateScores(np.zeros((len(edits[i]), len(e.candidates))),
                           np.zeros((len(edits[i]), len(e.candidates)), dtype=bool), clean[first_row[i]].numpy())
           for i, e in enumerate(examples)]
    for (i, k, c), lp, ex in zip(rows, logprob, exact):
        out[i].logprob[k, c] = lp
        out[i].exact[k, c] = ex
    return out


def _edit_tensors(edits: Sequence[Edits], rows: list[tuple[int, int, int]]):
    keep = torch.stack([edits[i].keep[k] for i, k, _ in rows])
    vector = torch.stack([edits[i].vector[k] for i, k, _ in rows])
    norm_scaled = torch.stack([edits[i].norm_scaled[k] for i, k, _ in rows])
    return keep, vector, norm_scaled


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
    with residual_edit(model, layer, torch.arange(len(rows)), positions, *_edit_tensors(edits, rows), recorded):
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
    scored = [score_continuation(logprobs, r, len(examples[i].prompt_ids) - 1, examples[i].candidates[c])
              for r, (i, _, c) in enumerate(rows)]
    return _collect(examples, edits, rows, [s[0] for s in scored], [s[1] for s in scored], recorded[0])


def suffix_attention_mask(prefix_lengths: torch.Tensor, prefix_width: int, block_ids: torch.Tensor,
                          block_offsets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask [batch, 1, suffix_width, prefix_width + suffix_width] for the packed suffix pass.

    Row r's suffix packs one block per (edit, candidate). A query sees the row's
    real prefix keys (k < prefix_lengths[r]) and, in the suffix, only keys of
    its own block at or before itself: each block is the continuation of the
    prefix under one edit, as if it ran alone. ``block_ids`` [batch, suffix_width]
    is -1 on padding; ``block_offsets`` is each token's index within its block.
    """
    prefix_ok = torch.arange(prefix_width)[None, :] < prefix_lengths[:, None]  # [batch, prefix]
    same_block = (block_ids[:, :, None] == block_ids[:, None, :]) & (block_ids[:, None, :] >= 0)
    causal = block_offsets[:, None, :] <= block_offsets[:, :, None]
    suffix_ok = same_block & causal  # [batch, queries, suffix keys]
    allowed = torch.cat([prefix_ok[:, None, :].expand(-1, block_ids.shape[1], -1), suffix_ok], dim=2)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


@torch.inference_mode()
def fast_scores(model: "PreTrainedModel", examples: Sequence[Example], layer: int, edits: Sequence[Edits],
                pad_id: int = 0) -> list[CandidateScores]:
    """Same scores as :func:`naive_scores`; the prefix before each edit position is computed once.

    One pass over the examples' prefixes (trunk only) fills the key/value
    cache; one more pass runs every (edit, candidate) continuation, packed
    side by side in its example's row with a block-diagonal mask, against that
    cache, so the cache is never copied per edit. Work: prefix tokens +
    edits x candidates x continuation tokens, instead of edits x candidates x
    whole sequences.
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    prefix_lengths = torch.as_tensor([e.position for e in examples])
    prefix_width = int(prefix_lengths.max())
    cache = None
    if prefix_width > 0:
        prefix_ids, prefix_mask = right_padded([e.prompt_ids[: e.position] for e in examples], pad_id)
        # the trunk only: the prefix needs its keys and values, not logits over the vocabulary
        cache = model.base_model(input_ids=prefix_ids.to(device), attention_mask=prefix_mask.to(device),
                                 use_cache=True).cache
    rows = _rows(examples, edits)
    packed: list[list[int]] = [[] for _ in examples]
    block_of: list[list[int]] = [[] for _ in examples]
    offset_of: list[list[int]] = [[] for _ in examples]
    starts = []  # where each scored row's block starts in its example's packed suffix
    for block, (i, _, c) in enumerate(rows):
        continuation = examples[i].prompt_ids[examples[i].position:] + examples[i].candidates[c]
        starts.append(len(packed[i]))
        packed[i].extend(continuation)
        block_of[i].extend([block] * len(continuation))
        offset_of[i].extend(range(len(continuation)))
    suffix_ids, _ = right_padded(packed, pad_id)
    width = suffix_ids.shape[1]
    block_ids = torch.full((len(examples), width), -1, dtype=torch.long)
    block_offsets = torch.zeros((len(examples), width), dtype=torch.long)
    for i in range(len(examples)):
        block_ids[i, : len(block_of[i])] = torch.as_tensor(block_of[i], dtype=torch.long)
        block_offsets[i, : len(offset_of[i])] = torch.as_tensor(offset_of[i], dtype=torch.long)
    position_ids = prefix_lengths[:, None] + block_offsets
    mask = suffix_attention_mask(prefix_lengths, prefix_width, block_ids, block_offsets, dtype)
    edit_rows = torch.as_tensor([i for i, _, _ in rows])
    edit_positions = torch.as_tensor(starts)  # the edited state is each block's first token
    recorded: list[torch.Tensor] = []
    with residual_edit(model, layer, edit_rows, edit_positions, *_edit_tensors(edits, rows), recorded):
        logits = model(input_ids=suffix_ids.to(device), attention_mask=mask.to(device),
                       position_ids=position_ids.to(device), cache=cache, use_cache=cache is not None).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
    scored = [score_continuation(logprobs, i, starts[n] + len(examples[i].prompt_ids) - 1 - examples[i].position,
                             examples[i].candidates[c]) for n, (i, _, c) in enumerate(rows)]
    return _collect(examples, edits, rows, [s[0] for s in scored], [s[1] for s in scored], recorded[0])
