"""Edit one residual-stream state and score answers, computing the clean prefix once.

Convention: ``layer`` indexes HF ``hidden_states``. For ``layer < L`` the edit
changes the input of decoder block ``layer`` (0 = the embedding output); for
``layer == L`` it changes the final-norm output that HF reports as
``hidden_states[L]``.

An edit at position p changes nothing before p. The fast path therefore runs
the prompt's first p tokens once per example (keeping their key/value cache),
then runs only positions >= p for every (edit, candidate answer) row, the rows
of all edits batched together against the repeated cache. ``naive_*`` runs
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


def decoder_layers(model: "PreTrainedModel") -> torch.nn.ModuleList:
    """The stack of decoder blocks of any HF decoder-only model (``layers``, ``h`` or ``blocks``)."""
    base = model.base_model
    for name in ("layers", "h", "blocks"):
        stack = getattr(base, name, None)
        if isinstance(stack, torch.nn.ModuleList):
            return stack
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__}")


def final_norm(model: "PreTrainedModel") -> torch.nn.Module:
    base = model.base_model
    for name in ("final_layer_norm", "norm", "ln_f"):
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ValueError(f"cannot find the final norm of {type(model).__name__}")


def apply_edits(hidden: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor, vector: torch.Tensor,
                norm_scaled: torch.Tensor) -> torch.Tensor:
    """``hidden`` [rows, seq, d] with row r's state at ``positions[r]`` edited; rows with keep=1, vector=0 unchanged."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    clean = hidden[rows, positions]  # [rows, d]
    scale = torch.where(norm_scaled, clean.norm(dim=-1), torch.ones_like(keep, dtype=clean.dtype))
    edited = keep.to(clean.dtype)[:, None] * clean + scale[:, None] * vector.to(clean.dtype)
    out = hidden.clone()
    out[rows, positions] = edited
    return out


@contextlib.contextmanager
def residual_edit(model: "PreTrainedModel", layer: int, positions: torch.Tensor, keep: torch.Tensor,
                  vector: torch.Tensor, norm_scaled: torch.Tensor) -> Iterator[None]:
    """Apply the edits to ``hidden_states[layer]`` during forward passes inside the block.

    The hooks accept a block's input given positionally or by keyword, so they
    do not depend on whether the blocks return tensors or tuples (which
    changed in transformers 5).
    """
    blocks = decoder_layers(model)
    n_layers = len(blocks)
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer {layer} out of range 0..{n_layers}")

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        return apply_edits(hidden, positions.to(hidden.device), keep.to(hidden.device), vector.to(hidden.device),
                           norm_scaled.to(hidden.device))

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
             logprob: list[float], exact: list[bool]) -> list[CandidateScores]:
    out = [CandidateScores(np.zeros((len(edits[i]), len(e.candidates))), np.zeros((len(edits[i]), len(e.candidates)),
                                                                                     dtype=bool))
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


def _score_targets(logprobs: torch.Tensor, row: int, first_prediction: int, targets: list[int]) -> tuple[float, bool]:
    """Sum of log-probs of ``targets`` predicted from positions first_prediction.. and whether each is the arg-max."""
    positions = torch.arange(first_prediction, first_prediction + len(targets))
    target = torch.as_tensor(targets, dtype=torch.long)
    token_logprobs = logprobs[row, positions, target]
    return float(token_logprobs.sum()), bool((logprobs[row, positions].argmax(-1) == target).all())


@torch.inference_mode()
def naive_scores(model: "PreTrainedModel", examples: Sequence[Example], layer: int, edits: Sequence[Edits],
                 pad_id: int = 0) -> list[CandidateScores]:
    """Reference: a full hooked forward of prompt + candidate for every (edit, candidate) row."""
    rows = _rows(examples, edits)
    device = next(model.parameters()).device
    sequences = [examples[i].prompt_ids + examples[i].candidates[c] for i, _, c in rows]
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for r, sequence in enumerate(sequences):
        input_ids[r, : len(sequence)] = torch.as_tensor(sequence)
        attention[r, : len(sequence)] = 1
    positions = torch.as_tensor([examples[i].position for i, _, _ in rows])
    with residual_edit(model, layer, positions, *_edit_tensors(edits, rows)):
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
    scored = [_score_targets(logprobs, r, len(examples[i].prompt_ids) - 1, examples[i].candidates[c])
              for r, (i, _, c) in enumerate(rows)]
    return _collect(examples, edits, rows, [s[0] for s in scored], [s[1] for s in scored])


def suffix_attention_mask(prefix_lengths: torch.Tensor, prefix_width: int, suffix_lengths: torch.Tensor,
                          suffix_width: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask [rows, 1, suffix_width, prefix_width + suffix_width] for the suffix pass.

    Query j of row r sees the row's real prefix keys (k < prefix_lengths[r]) and
    suffix keys up to itself; padded prefix slots and padded suffix keys are hidden.
    """
    keys = torch.arange(prefix_width + suffix_width)
    queries = torch.arange(suffix_width)
    prefix_ok = keys[None, :] < prefix_lengths[:, None]  # [rows, keys]
    suffix_key = keys - prefix_width  # index within the suffix (negative for prefix slots)
    suffix_ok = (suffix_key[None, None, :] >= 0) & (suffix_key[None, None, :] <= queries[None, :, None]) \
        & (suffix_key[None, None, :] < suffix_lengths[:, None, None])
    allowed = (prefix_ok[:, None, :] & (suffix_key[None, None, :] < 0)) | suffix_ok  # [rows, queries, keys]
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


@torch.inference_mode()
def fast_scores(model: "PreTrainedModel", examples: Sequence[Example], layer: int, edits: Sequence[Edits],
                pad_id: int = 0) -> list[CandidateScores]:
    """Same scores as :func:`naive_scores`; the prefix before each edit position is computed once per example.

    Rows of one call share one cache: pass a batch of examples (a few to a few
    dozen) per call; the work is prefix(batch) + suffix(rows).
    """
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    rows = _rows(examples, edits)
    prefix_lengths = torch.as_tensor([e.position for e in examples])
    prefix_width = int(prefix_lengths.max())
    cache = None
    if prefix_width > 0:
        prefix_ids = torch.full((len(examples), prefix_width), pad_id, dtype=torch.long)
        prefix_mask = torch.zeros((len(examples), prefix_width), dtype=torch.long)
        for i, example in enumerate(examples):
            prefix_ids[i, : example.position] = torch.as_tensor(example.prompt_ids[: example.position])
            prefix_mask[i, : example.position] = 1
        # the trunk only: the prefix needs its keys and values, not logits over the vocabulary
        cache = model.base_model(input_ids=prefix_ids.to(device), attention_mask=prefix_mask.to(device),
                                 use_cache=True).cache
        cache.batch_select_indices(torch.as_tensor([i for i, _, _ in rows], device=device))
    suffixes = [examples[i].prompt_ids[examples[i].position:] + examples[i].candidates[c] for i, _, c in rows]
    suffix_width = max(len(s) for s in suffixes)
    suffix_ids = torch.full((len(rows), suffix_width), pad_id, dtype=torch.long)
    for r, suffix in enumerate(suffixes):
        suffix_ids[r, : len(suffix)] = torch.as_tensor(suffix)
    row_prefix = prefix_lengths[[i for i, _, _ in rows]]
    position_ids = row_prefix[:, None] + torch.arange(suffix_width)[None, :]
    mask = suffix_attention_mask(row_prefix, prefix_width, torch.as_tensor([len(s) for s in suffixes]),
                                 suffix_width, dtype)
    zero = torch.zeros(len(rows), dtype=torch.long)  # the edited position is the suffix's first token
    with residual_edit(model, layer, zero, *_edit_tensors(edits, rows)):
        logits = model(input_ids=suffix_ids.to(device), attention_mask=mask.to(device),
                       position_ids=position_ids.to(device), cache=cache, use_cache=cache is not None).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
    scored = [_score_targets(logprobs, r, len(examples[i].prompt_ids) - 1 - examples[i].position,
                             examples[i].candidates[c]) for r, (i, _, c) in enumerate(rows)]
    return _collect(examples, edits, rows, [s[0] for s in scored], [s[1] for s in scored])
