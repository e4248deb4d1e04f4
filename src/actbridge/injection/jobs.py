"""Inject bridged sender states into the receiver on eval and score every condition per example.

One call covers one bridge (layer pair, method, seed) at one role. The
receiver reads its own prompt (in ``asymmetric`` mode, without the first-hop
facts; in ``relay`` mode, the question alone); the edit site is the role's token in that prompt. Rows of the result
are paired by ``example_id`` with the ``none`` condition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from actbridge.activations.store import ActivationStore, RowKey
from actbridge.bridges.jobs import BridgeRun, load_bridges, load_fit_modes
from actbridge.bridges.maps import Bridge
from actbridge.injection.conditions import (CONDITIONS, NEEDS, Condition, ConditionInputs, InjectionContext, bind,
                                            condition_labels, edit_for)
from actbridge.injection.controls import random_directions, within_mode_derangement
from actbridge.models.edited_scoring import Edits, edited_states, score_under_edits
from actbridge.models.handle import ModelHandle
from actbridge.logs import Progress
from actbridge.activations.roles import ROLES, role_positions_for_table
from actbridge.schemas import JOB_SCHEMA, RESULT_SCHEMA

log = logging.getLogger(__name__)


def build_edits(labels: Sequence[tuple[str, float | None]], inputs: ConditionInputs,
                bound: Mapping[str, Condition] | None = None) -> Edits:
    """The engine's edits of one example, one per label (each may remove its own subspace or see h)."""
    parts = [edit_for(condition, alpha, inputs, bound) for condition, alpha in labels]
    as_tensor: dict[int, torch.Tensor] = {}  # one tensor per basis array, however many edits share it

    def basis(part) -> torch.Tensor | None:
        if part.project_out is None:
            return None
        if id(part.project_out) not in as_tensor:
            as_tensor[id(part.project_out)] = torch.from_numpy(np.ascontiguousarray(part.project_out, np.float32))
        return as_tensor[id(part.project_out)]

    transformed = any(p.transform is not None for p in parts)
    return Edits(torch.tensor([p.keep for p in parts], dtype=torch.float32),
                 torch.from_numpy(np.stack([p.vector for p in parts]).astype(np.float32)),
                 torch.tensor([p.norm_scaled for p in parts], dtype=torch.bool),
                 tuple(basis(p) for p in parts) if any(p.project_out is not None for p in parts) else (),
                 tuple(p.transform for p in parts) if transformed else (),
                 torch.from_numpy(np.stack([p.source if p.transform is not None else np.zeros_like(p.vector)
                                            for p in parts]).astype(np.float32)) if transformed else None)


@dataclass(frozen=True)
class InjectionSite:
    """Where to inject: receiver ``hidden_states`` index and token role."""

    layer: int
    role: str


def run_injection(receiver: ModelHandle, examples: pa.Table,
                  site: InjectionSite, bridge: Bridge | Mapping[str, Bridge], *, sender_keys: Sequence[RowKey],
                  sender_states: np.ndarray, conditions: Sequence[str], alphas: Sequence[float],
                  full_keys: Sequence[RowKey] | None = None, full_states: np.ndarray | None = None, seed: int = 0,
                  batch_tokens: int | None = None, bound: Mapping | None = None) -> pa.Table:
    """Per-example scores of every (condition, α) at ``site``.

    ``sender_states`` [n, d_s] are the sender's raw states at the bridged layer
    and this role, keyed by (example_id, mode) in ``sender_keys``; ``full_states``
    (keyed by ``full_keys``) are the receiver's own states at ``site`` on the
    full-context prompt, needed by ``self_patch`` only. Examples without the
    role (no bridge entity in a 1-hop question) are skipped; ``self_patch`` is
    scored only where the receiver's prompt lacks facts of the full one (in
    ``shared`` mode it would write back the state it replaces).

    ``bridge`` is one bridge for every context mode, or one per mode (``{mode: Bridge}``, as
    :func:`actbridge.bridges.jobs.load_bridges` returns them); rows of a mode without one are skipped.

    ``bound``: the conditions prepared for this job and role (:func:`actbridge.injection.conditions.bind`),
    where some read more than the example's vectors.

    ``perturbation`` is ``||h' - h|| / ||h||``: every condition's strength on
    one scale, relative to the receiver's own state, whatever the model.
    """
    labels = condition_labels(conditions, alphas)
    where_facts_present = [label for label in labels if not CONDITIONS[label[0]].needs_missing_facts]
    positions = role_positions_for_table(receiver, examples, "receiver", [site.role])[site.role]
    ids = examples.column("example_id").to_pylist()
    modes = examples.column("mode").to_pylist()
    keys = list(zip(ids, modes))
    bridge_of = bridge if isinstance(bridge, Mapping) else {mode: bridge for mode in set(modes)}
    sender_row = {key: row for row, key in enumerate(sender_keys)}
    keep = [i for i, key in enumerate(keys) if positions[i] >= 0 and key in sender_row and key[1] in bridge_of]
    if len(keep) < 2:
        raise ValueError(f"fewer than two examples have role {site.role!r}, sender states and a bridge")
    bridged = bridged_states(bridge_of, [modes[i] for i in keep],
                             sender_states[[sender_row[keys[i]] for i in keep]])  # [n, d_r], raw receiver space
    shuffled = bridged[within_mode_derangement([modes[i] for i in keep], seed)]
    directions = random_directions(len(keep), bridged.shape[1], seed)
    full_row = {key: row for row, key in enumerate(full_keys or [])}
    prompts = examples.column("receiver_prompt").to_pylist()
    full_prompts = examples.column("full_prompt").to_pylist()
    hops = examples.column("hops").to_pylist()
    # self_patch only where the receiver's prompt lacks facts; elsewhere it would write back h itself
    labels_of = [labels if prompts[i] != full_prompts[i] else where_facts_present for i in keep]

    def edits_for(n: int) -> Edits:
        full = full_states[full_row[keys[keep[n]]]] if keys[keep[n]] in full_row else None
        mode = modes[keep[n]]
        return build_edits(labels_of[n], ConditionInputs(bridged[n], shuffled[n], directions[n],
                                                         bridge_of[mode].receiver.mean, full, mode), bound)

    columns: dict[str, list] = {field.name: [] for field in RESULT_SCHEMA}
    answers, candidates = examples.column("answer").to_pylist(), examples.column("candidates").to_pylist()
    scored = score_under_edits(receiver, site.layer, [prompts[i] for i in keep],
                               [positions[i] for i in keep], [answers[i] for i in keep],
                               [candidates[i] for i in keep], edits_for, batch_tokens=batch_tokens,
                               progress=Progress(len(keep), f"injection at layer {site.layer}, role {site.role}"))
    for n, edits, score, names, gold in scored:
        i = keep[n]
        h = score.clean_state.astype(np.float64)
        b = bridged[n]
        h_norm, b_norm = float(np.linalg.norm(h)), float(np.linalg.norm(b))
        cos_hb = float(h @ b / (h_norm * b_norm)) if h_norm > 0 and b_norm > 0 else float("nan")
        perturbation = relative_perturbation(h, edits)
        for k, (condition, alpha) in enumerate(labels_of[n]):
            columns["example_id"].append(ids[i])
            columns["mode"].append(modes[i])
            columns["hops"].append(hops[i])
            columns["role"].append(site.role)
            columns["condition"].append(condition)
            columns["alpha"].append(alpha)
            for column, value in score.gold_scores(k, gold).items():
                columns[column].append(value)
            columns["n_candidates"].append(len(names))
            columns["h_norm"].append(h_norm)
            columns["b_norm"].append(b_norm)
            columns["cos_hb"].append(cos_hb)
            columns["perturbation"].append(float(perturbation[k]))
    return pa.table(columns, schema=RESULT_SCHEMA)


def bridged_states(bridge_of: Mapping[str, Bridge], modes: Sequence[str], sender_states: np.ndarray) -> np.ndarray:
    """[n, d_r] each row's sender state [n, d_s] through its context mode's bridge."""
    modes = np.asarray(modes)
    out = None
    for mode in sorted(set(modes.tolist())):
        rows = np.flatnonzero(modes == mode)
        mapped = bridge_of[mode].apply(sender_states[rows])
        if out is None:
            out = np.empty((len(modes), mapped.shape[1]), dtype=mapped.dtype)
        out[rows] = mapped
    return out


def relative_perturbation(clean: np.ndarray, edits: Edits) -> np.ndarray:
    """[K] ||h' - h|| / ||h|| of each edit of the clean state ``clean`` [d], applied as the forward pass does."""
    state = torch.from_numpy(np.asarray(clean, dtype=np.float64))
    change = (edited_states(state, edits) - state).numpy()
    norm = float(np.linalg.norm(clean))
    return np.linalg.norm(change, axis=1) / norm if norm > 0 else np.full(len(edits), np.nan)


def control_seed(bridge_seed: int, role: str) -> int:
    """Seed of the random and shuffled controls: differs by bridge seed and role, fixed for a given pair."""
    return 1000 * bridge_seed + ROLES.index(role)


def run_injection_job(receiver: ModelHandle, examples: pa.Table,
                      bridge_dir: str | Path, run: BridgeRun, *, stores: Mapping[str, ActivationStore],
                      roles: Sequence[str], conditions: Sequence[str], alphas: Sequence[float],
                      condition_settings: Mapping[str, Mapping] | None = None,
                      batch_tokens: int | None = None) -> pa.Table:
    """One injection job: one bridge ``run`` (pair, method, seed), every role, on ``examples`` (eval).

    ``bridge_dir/{role}`` holds the role's fitted bridges, one per context mode or pooled
    (:func:`actbridge.bridges.jobs.load_bridges`). ``stores`` holds ``sender_eval`` (the sender's eval
    states on its own prompt), ``receiver_eval`` (the receiver's eval states on the full-context prompt,
    for ``self_patch``) and whatever the conditions need (:data:`actbridge.injection.conditions.NEEDS`).
    ``condition_settings[name]`` is ``injection.<name>`` of a condition that has settings.
    """
    missing = sorted({need for name in conditions for need in CONDITIONS[name].needs} - set(stores))
    if missing:
        raise ValueError(f"conditions {list(conditions)} need the stored states {missing} "
                         f"({', '.join(f'{NEEDS[m][0]} {NEEDS[m][1]}' for m in missing)})")
    tables = []
    for role in roles:
        role_dir = Path(bridge_dir) / role
        bridges = load_bridges(role_dir)
        context = InjectionContext(role, run.sender_layer, run.receiver_layer, bridges, load_fit_modes(role_dir), {},
                                   stores)
        bound = bind(conditions, context, condition_settings or {})
        sender_keys, sender_states = stores["sender_eval"].read(run.sender_layer, role)
        full_keys, full_states = stores["receiver_eval"].read(run.receiver_layer, role)
        result = run_injection(receiver, examples, InjectionSite(run.receiver_layer, role), bridges,
                               sender_keys=sender_keys, sender_states=sender_states, conditions=conditions,
                               alphas=alphas, full_keys=full_keys, full_states=full_states,
                               seed=control_seed(run.seed, role), batch_tokens=batch_tokens, bound=bound)
        log.info("%s %s seed %d role %s: %d rows", run.pair, run.method, run.seed, role, result.num_rows)
        tables.append(tag_rows(result, run))
    return pa.concat_tables(tables)


def tag_rows(result: pa.Table, run: BridgeRun) -> pa.Table:
    """``run_injection`` rows tagged with the bridge that produced them (JOB_SCHEMA)."""
    n = result.num_rows
    tagged = {"pair": pa.array([run.pair] * n, pa.string()),
              "sender_layer": pa.array([run.sender_layer] * n, pa.int16()),
              "receiver_layer": pa.array([run.receiver_layer] * n, pa.int16()),
              "method": pa.array([run.method] * n, pa.string()), "seed": pa.array([run.seed] * n, pa.int32())}
    return pa.table({**tagged, **{name: result.column(name) for name in result.column_names}}, schema=JOB_SCHEMA)
