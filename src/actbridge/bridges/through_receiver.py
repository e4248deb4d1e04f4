"""Bridges trained for the receiver: the map is fitted end to end through the frozen receiver on its answer loss.

The offline methods fit the receiver's *state* (what its own full-context pass computes at the
site); this one fits the receiver's *use* of the injected vector: the hypothesis that an
interface between models must be trained for its reader. The map has the form of the linear
bridges (normalized sender state -> normalized receiver state, then the receiver's scale and
mean), so alignment metrics, injection and statistics treat it like any other bridge, and its
alignment can be read beside its effect: a bridge can help while aligning worse.

Training: start from a given bridge (the ridge fit), inject its output at the role's token of the
receiver's own prompt (``replace``: b instead of h; ``add``: h + b), and minimise with Adam the
negative log-probability of the gold answer's tokens (teacher-forced, full vocabulary), the
receiver frozen. Each epoch is scored on bridge_val; the best epoch (epoch 0 = the start) is kept,
and training stops once ``patience`` epochs in a row have not beaten it.

The default budget (``bridge.trained`` in the schema) is sized so that the bridge_val loss has levelled
off before training stops; docs/findings.md, "A bridge trained for the receiver", has the measurements.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pyarrow as pa
import torch

from actbridge.activations.store import RowKey
from actbridge.bridges.maps import Bridge
from actbridge.models.heads import token_scores
from actbridge.models.edited_scoring import Edits, Example, packed_token_logprobs, residual_edit
from actbridge.logs import Progress
from actbridge.models.padding import right_padded
from actbridge.activations.roles import role_positions_for_table

if TYPE_CHECKING:  # hints only
    from transformers import PreTrainedModel

    from actbridge.bridges.methods.trained import TrainedSettings
    from actbridge.models.handle import ModelHandle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnswerRows:
    """Training rows on the receiver side, one per example that has the role and a sender state."""

    token_ids: list[list[int]]  # receiver prompt + " " + gold answer
    answer_start: np.ndarray  # [n] index of the answer's first token
    positions: np.ndarray  # [n] the role's token in the receiver prompt (the edit site)
    sender_states: np.ndarray  # [n, d_s] raw sender states at the bridged layer and role

    def __len__(self) -> int:
        return len(self.token_ids)


def answer_rows(handle: "ModelHandle", examples: pa.Table, role: str, sender_keys: Sequence[RowKey],
                sender_states: np.ndarray, modes: Sequence[str] | None = None) -> AnswerRows:
    """Pair each example of ``examples`` (in ``modes``) with its sender state, keyed by (example_id, mode)."""
    positions = role_positions_for_table(handle, examples, "receiver", [role])[role]
    row_of = {key: row for row, key in enumerate(sender_keys)}
    keys = list(zip(examples.column("example_id").to_pylist(), examples.column("mode").to_pylist()))
    keep = [i for i, key in enumerate(keys) if positions[i] >= 0 and key in row_of
            and (modes is None or key[1] in modes)]
    prompts, answers = examples.column("receiver_prompt").to_pylist(), examples.column("answer").to_pylist()
    encoded = [handle.encode_continuations(prompts[i], [answers[i]])[0] for i in keep]
    return AnswerRows(token_ids=[ids for ids, _ in encoded], answer_start=np.array([s for _, s in encoded]),
                      positions=positions[keep], sender_states=sender_states[[row_of[keys[i]] for i in keep]])


class BridgeMap(torch.nn.Module):
    """The bridge as a differentiable map: raw sender state -> raw receiver-space vector."""

    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        if bridge.hidden_weight is not None:
            raise ValueError("a trained bridge starts from a linear bridge (ridge, lowrank, procrustes, sgd)")
        self.weight = torch.nn.Parameter(torch.tensor(bridge.weight, dtype=torch.float32))
        self.bias = torch.nn.Parameter(torch.tensor(bridge.bias, dtype=torch.float32))
        for name, value in (("sender_mean", bridge.sender.mean), ("receiver_mean", bridge.receiver.mean)):
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32))
        self.sender_scale, self.receiver_scale = float(bridge.sender.scale), float(bridge.receiver.scale)

    def forward(self, sender_raw: torch.Tensor) -> torch.Tensor:
        normalized = (sender_raw - self.sender_mean) / self.sender_scale
        return (normalized @ self.weight + self.bias) * self.receiver_scale + self.receiver_mean


def answer_loss(receiver: "PreTrainedModel", layer: int, rows: AnswerRows, index: np.ndarray, bridged: torch.Tensor,
                injection: str, pad_id: int) -> torch.Tensor:
    """Mean over ``index`` rows of −log p(gold answer tokens), with ``bridged`` [n, d_r] injected.

    Two equal ways (value and gradient, tested): :func:`cached_prefix_answer_loss` where the tokens from
    the injection on are at most half of the rows' tokens (the prefix cache saves the work before the
    site), else :func:`whole_sequence_answer_loss` (a mid-prompt site leaves little prefix to save, and
    the cache costs more than it saves); ``benchmarks/trained_bridge.py`` measures both, docs/measurements.md
    has the figures.
    """
    after = sum(len(rows.token_ids[i]) - int(rows.positions[i]) for i in index)
    total = sum(len(rows.token_ids[i]) for i in index)
    loss_of = cached_prefix_answer_loss if 2 * after <= total else whole_sequence_answer_loss
    return loss_of(receiver, layer, rows, index, bridged, injection, pad_id)


def cached_prefix_answer_loss(receiver: "PreTrainedModel", layer: int, rows: AnswerRows, index: np.ndarray,
                              bridged: torch.Tensor, injection: str, pad_id: int) -> torch.Tensor:
    """:func:`answer_loss` with the prompt before the injection run once without a gradient (its key/value
    cache: the injection changes nothing before its token) and only the rest with one, logits only where an
    answer token is predicted (:func:`actbridge.models.edited_scoring.packed_token_logprobs`)."""
    examples = [Example(rows.token_ids[i][: rows.answer_start[i]], int(rows.positions[i]),
                        [rows.token_ids[i][rows.answer_start[i]:]]) for i in index]
    keep = torch.ones(1) if injection == "add" else torch.zeros(1)
    edits = [Edits(keep, bridged[j: j + 1], torch.zeros(1, dtype=torch.bool)) for j in range(len(index))]
    scored = packed_token_logprobs(receiver, examples, layer, edits, pad_id)
    return -scored.logprob.sum() / len(index)


def whole_sequence_answer_loss(receiver: "PreTrainedModel", layer: int, rows: AnswerRows, index: np.ndarray,
                               bridged: torch.Tensor, injection: str, pad_id: int) -> torch.Tensor:
    """:func:`answer_loss` by one hooked forward of every whole sequence (the gradient then flows only
    through what the injection reaches)."""
    device = next(receiver.parameters()).device
    input_ids, attention = right_padded([rows.token_ids[i] for i in index], pad_id)
    n = len(index)
    keep = torch.full((n,), 1.0 if injection == "add" else 0.0)
    with residual_edit(receiver, layer, torch.arange(n), torch.as_tensor(rows.positions[index]), keep,
                       bridged, torch.zeros(n, dtype=torch.bool)):
        final = receiver.base_model(input_ids=input_ids.to(device),
                                    attention_mask=attention.to(device)).last_hidden_state
    # position t predicts token t + 1: the vocabulary only at the positions that predict an answer token
    sites = [(row, t) for row, i in enumerate(index) for t in range(rows.answer_start[i] - 1, len(rows.token_ids[i]) - 1)]
    site_rows = torch.as_tensor([row for row, _ in sites], device=device)
    site_columns = torch.as_tensor([t for _, t in sites], device=device)
    scores = token_scores(receiver, final[site_rows, site_columns], torch.arange(len(sites)),
                          input_ids.to(device)[site_rows, site_columns + 1])
    return -scores.logprob.sum() / n


def _mean_loss(receiver: "PreTrainedModel", layer: int, rows: AnswerRows, bridge_map: BridgeMap,
               settings: TrainedSettings, pad_id: int) -> float:
    device = next(receiver.parameters()).device
    total = 0.0
    with torch.no_grad():
        for begin in range(0, len(rows), settings.batch_size):
            index = np.arange(begin, min(begin + settings.batch_size, len(rows)))
            bridged = bridge_map(torch.as_tensor(rows.sender_states[index], dtype=torch.float32, device=device))
            total += float(answer_loss(receiver, layer, rows, index, bridged, settings.injection, pad_id)) * len(index)
    return total / max(len(rows), 1)


def train_bridge(receiver: "PreTrainedModel", layer: int, start: Bridge, train: AnswerRows, val: AnswerRows,
                 settings: TrainedSettings, seed: int, pad_id: int) -> Bridge:
    """Train ``start``'s map through the frozen ``receiver`` at ``hidden_states[layer]``; keep the best val epoch."""
    if len(train) == 0 or len(val) == 0:
        raise ValueError("a trained bridge needs bridge_train and bridge_val rows with the role and sender states")
    device = next(receiver.parameters()).device
    receiver.eval().requires_grad_(False)
    torch.manual_seed(seed)
    bridge_map = BridgeMap(start).to(device)
    optimizer = torch.optim.Adam(bridge_map.parameters(), lr=settings.learning_rate)
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = np.sort(rng.choice(len(train), size=min(settings.max_rows, len(train)), replace=False))
    history = [_mean_loss(receiver, layer, val, bridge_map, settings, pad_id)]
    log.info("trained bridge epoch 0 (the %s start): val answer loss %.4f", start.method, history[0])
    best = (history[0], 0, {k: v.detach().clone() for k, v in bridge_map.state_dict().items()})
    for epoch in range(1, settings.epochs + 1):
        order = rng.permutation(rows)
        progress = Progress(len(order), f"trained bridge epoch {epoch}")
        for begin in range(0, len(order), settings.batch_size):
            index = order[begin:begin + settings.batch_size]
            bridged = bridge_map(torch.as_tensor(train.sender_states[index], dtype=torch.float32, device=device))
            loss = answer_loss(receiver, layer, train, index, bridged, settings.injection, pad_id)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            progress.update(len(index))
        history.append(_mean_loss(receiver, layer, val, bridge_map, settings, pad_id))
        log.info("trained bridge epoch %d: val answer loss %.4f", epoch, history[-1])
        if history[-1] < best[0]:
            best = (history[-1], epoch, {k: v.detach().clone() for k, v in bridge_map.state_dict().items()})
        elif epoch - best[1] >= settings.patience:
            log.info("no better bridge_val loss for %d epochs: stopping", settings.patience)
            break
    state = best[2]
    info = {"start": start.method, "injection": settings.injection, "best_epoch": best[1],
            "val_loss_by_epoch": history, "train_rows": len(rows), "val_rows": len(val)}
    return Bridge("trained", start.sender, start.receiver, state["weight"].cpu().double().numpy(),
                  state["bias"].cpu().double().numpy(), info=info)


def receiver_trainer(handle: "ModelHandle", examples: dict[str, pa.Table],
                     sender_stores: dict, sender_layer: int, receiver_layer: int, settings: TrainedSettings,
                     seed: int):
    """For :func:`actbridge.bridges.jobs.run_bridge_job`: (role, offline start bridge, context modes) -> bridge
    trained through the receiver on those modes' bridge_train rows, selected on their bridge_val rows
    (``examples`` and ``sender_stores`` keyed by split)."""
    receiver, pad_id = handle.model, handle.pad_id

    def train(role: str, start: Bridge, modes: Sequence[str]) -> Bridge:
        rows = {}
        for split in ("bridge_train", "bridge_val"):
            keys, states = sender_stores[split].read(sender_layer, role, list(modes))
            rows[split] = answer_rows(handle, examples[split], role, keys, states, modes)
        log.info("role %s, %s rows: training through the receiver on %d rows (of %d), selecting on %d", role,
                 "/".join(modes), min(settings.max_rows, len(rows["bridge_train"])), len(rows["bridge_train"]),
                 len(rows["bridge_val"]))
        from actbridge.models.memory import batches_sized_by

        with batches_sized_by("bridge.trained.batch_size", settings.batch_size):
            return train_bridge(receiver, receiver_layer, start, rows["bridge_train"], rows["bridge_val"], settings,
                                seed, pad_id)

    return train
