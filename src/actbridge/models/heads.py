"""Answer-token scores from final hidden states, the vocabulary materialized a chunk at a time.

A model's own forward computes logits at every position of every row, and a log-softmax over
them doubles that: with a 262k vocabulary that is gigabytes per batch. Scoring needs, at each
position that predicts an answer token, only three numbers: the target's logit, the log-sum-exp
over the vocabulary and whether the target is the arg-max. So the trunk runs alone
(``model.base_model``), the states at those positions are gathered, and the output head is
applied to at most :data:`LOGIT_BUDGET_BYTES` worth of positions at a time. Positions that
predict several candidates' tokens (every candidate's first token is predicted at the prompt's
last position) are projected once.

The head is the model's ``get_output_embeddings()`` followed by what its architecture does to the
logits after it (Gemma's soft-capping, Cohere's ``logit_scale``, Granite's ``logits_scaling``);
:func:`check_output_head` compares that with the model's own forward once per loaded model, so
an architecture that does something else fails loudly instead of scoring wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # hints only
    from transformers import PreTrainedModel

LOGIT_BUDGET_BYTES = 256 * 2**20  # float32 logits held at once: 256 positions of a 262k vocabulary


def output_logits(model: "PreTrainedModel", hidden: torch.Tensor) -> torch.Tensor:
    """Logits [..., vocab] from final-norm states [..., d], as the model's forward computes them."""
    logits = model.get_output_embeddings()(hidden)
    config = model.config
    scale = getattr(model, "logit_scale", None) or getattr(config, "logit_scale", None)
    if scale is not None:  # Cohere multiplies
        logits = logits * scale
    divisor = getattr(config, "logits_scaling", None)
    if divisor is not None:  # Granite divides
        logits = logits / divisor
    cap = getattr(config, "final_logit_softcapping", None)
    if cap is not None:  # Gemma 2 and 3
        logits = torch.tanh(logits / cap) * cap
    return logits


def vocab_size(model: "PreTrainedModel") -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def chunk_positions(model: "PreTrainedModel", budget_bytes: int = LOGIT_BUDGET_BYTES) -> int:
    """How many positions' float32 logits fit in ``budget_bytes`` (at least one)."""
    return max(1, budget_bytes // (4 * vocab_size(model)))


@dataclass(frozen=True)
class TokenScores:
    """Per scored token: log-probability of the target (differentiable) and whether it is the arg-max."""

    logprob: torch.Tensor  # [tokens] float32
    is_argmax: torch.Tensor  # [tokens] bool


def _chunk_scores(model: "PreTrainedModel", hidden: torch.Tensor, local: torch.Tensor, targets: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    logits = output_logits(model, hidden).float()  # [u, vocab]
    target_logit = logits[local, targets]
    logprob = target_logit - torch.logsumexp(logits, dim=-1)[local]
    return logprob, logits.argmax(-1)[local] == targets


def token_scores(model: "PreTrainedModel", hidden: torch.Tensor, predictor: torch.Tensor, targets: torch.Tensor,
                 *, budget_bytes: int = LOGIT_BUDGET_BYTES) -> TokenScores:
    """Scores of ``targets[t]`` predicted by state ``hidden[predictor[t]]`` (hidden [u, d], final-norm states).

    The vocabulary is materialized for at most ``budget_bytes`` of positions at a time. Where a gradient
    is needed (the bridge trained through the receiver) each chunk is checkpointed, so backward keeps the
    states, not the logits.
    """
    device = hidden.device
    predictor = predictor.to(device)
    targets = targets.to(device)
    logprob = torch.zeros(len(targets), dtype=torch.float32, device=device)
    is_argmax = torch.zeros(len(targets), dtype=torch.bool, device=device)
    step = chunk_positions(model, budget_bytes)
    pieces = []
    for begin in range(0, hidden.shape[0], step):
        in_chunk = torch.nonzero((predictor >= begin) & (predictor < begin + step))[:, 0]
        if not len(in_chunk):
            continue
        chunk = hidden[begin:begin + step]
        local, chunk_targets = predictor[in_chunk] - begin, targets[in_chunk]
        if torch.is_grad_enabled() and chunk.requires_grad:
            from torch.utils.checkpoint import checkpoint

            chunk_logprob, chunk_hit = checkpoint(_chunk_scores, model, chunk, local, chunk_targets,
                                                  use_reentrant=False)
        else:
            chunk_logprob, chunk_hit = _chunk_scores(model, chunk, local, chunk_targets)
        pieces.append((in_chunk, chunk_logprob))
        is_argmax[in_chunk] = chunk_hit
    if pieces:
        logprob = logprob.index_put((torch.cat([i for i, _ in pieces]),), torch.cat([lp for _, lp in pieces]))
    return TokenScores(logprob, is_argmax)


class OutputHeadMismatch(RuntimeError):
    """The model's forward does something to its logits that :func:`output_logits` does not."""


@torch.inference_mode()
def check_output_head(model: "PreTrainedModel") -> None:
    """Compare :func:`output_logits` on the trunk's states with the model's own logits on a short input."""
    parameter = next(model.parameters())
    device = parameter.device
    tolerance = 1e-4 if parameter.dtype == torch.float32 else 2e-2  # relative to the largest logit
    input_ids = torch.arange(1, 5, device=device)[None] % vocab_size(model)
    reference = model(input_ids=input_ids).logits.float()
    ours = output_logits(model, model.base_model(input_ids=input_ids).last_hidden_state).float()
    gap = float((reference - ours).abs().max())
    if gap > tolerance * max(1.0, float(reference.abs().max())):
        raise OutputHeadMismatch(
            f"{type(model).__name__}: logits from its output head differ from its forward by {gap:.3g}; "
            "its architecture post-processes logits in a way actbridge.models.heads.output_logits does not know")
