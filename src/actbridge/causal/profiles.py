"""Sender-side causal profile: does the sender's own answer depend on the states a bridge translates?

High alignment may sit on features the sender does not use, so a failed
injection says little until the translated states are shown to matter (the
reference study's reviewer). For every bridged sender layer and role this
module ablates the sender's state on its own ``shared`` prompts and scores
the sender's answer:

* ``mean``: the state replaced by its ``bridge_train`` mean (same layer, role and mode);
* ``resample``: the state replaced by the state of another eval example (same mode);
* ``patch`` (counterfactual activation patching): the state replaced by the
  sender's state at the same role on the example's counterfactual prompt
  (the same facts but the first hop's object, so another bridge entity and
  another answer; see :func:`actbridge.data.worlds.counterfactual_world`). The
  ``moved`` metric is the rate at which the answer moves to the
  counterfactual's answer: how much of the answer the state carries.

``asymmetric`` prompts are left out: there the sender lacks the later facts
and cannot answer at all, so its answer cannot show what the state carries.

Receiver side, at every layer and role where a bridge injects:

* ``patch`` as above, inside the receiver on its ``shared`` prompts: is the
  injection site one the receiver reads its answer from at all?
* ``self_patch`` on ``asymmetric`` prompts (the receiver lacks the first-hop
  fact) and ``relay`` prompts (it lacks every fact of a 1-hop question): the
  state replaced by the receiver's own state at the same role on the
  full-context prompt. Its gain is the upper bound any bridge could reach at
  that site in that mode, the denominator of channel efficiency.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch

from actbridge.activations.store import ActivationStore, hidden_states_at
from actbridge.injection.controls import derangement
from actbridge.data.worlds import PARTIAL_MODES
from actbridge.models.handle import ModelHandle
from actbridge.models.edited_scoring import Edits, batch_tokens_or_default, score_under_edits
from actbridge.logs import Progress
from actbridge.activations.roles import role_positions_for_table
from actbridge.schemas import EFFECT_SCHEMA
from actbridge.markdown import interval, number, table_lines, to_arrow
from actbridge.stats.paired import METRICS, StatsSettings, paired_statistics, with_holm
from actbridge.stats.summaries import pooled


log = logging.getLogger(__name__)

ABLATIONS: tuple[str, ...] = ("mean", "resample")
MODE = "shared"

EXAMPLE_SCHEMA = pa.schema([
    ("example_id", pa.string()), ("mode", pa.string()), ("hops", pa.int8()), ("layer", pa.int16()),
    ("role", pa.string()), ("condition", pa.string()), ("exact_match", pa.bool_()), ("gold_logprob", pa.float64()),
    ("gold_rank", pa.int16()), ("first_token_top", pa.bool_()), ("first_token_logprob", pa.float64()),
    ("counterfactual_top1", pa.bool_()),  # patching rows: the counterfactual's answer ranks first among candidates
])
PATCH_METRICS = {**METRICS, "moved": "counterfactual_top1"}



def ablation_edits(mean: np.ndarray, resampled: np.ndarray) -> Edits:
    """none, mean ablation, resample ablation of one example's state ([d] vectors)."""
    vectors = np.stack([np.zeros_like(mean), mean, resampled]).astype(np.float32)
    return Edits(torch.tensor([1.0, 0.0, 0.0]), torch.from_numpy(vectors), torch.zeros(3, dtype=torch.bool))


def _score_rows(handle: ModelHandle, table: pa.Table, keep: Sequence[int],
                positions: np.ndarray, layer: int, role: str, edits: Sequence[Edits], conditions: Sequence[str],
                batch_tokens: int | None, side: str = "sender") -> pa.Table:
    """Score the model's answer on ``table``'s ``side`` prompts (rows ``keep``) under each example's edits."""
    ids = table.column("example_id").to_pylist()
    modes = table.column("mode").to_pylist()
    hops = table.column("hops").to_pylist()
    alternatives = (table.column("counterfactual_answer").to_pylist() if "counterfactual_answer" in table.column_names
                    else [None] * table.num_rows)
    prompts, answers = table.column(f"{side}_prompt").to_pylist(), table.column("answer").to_pylist()
    candidates = table.column("candidates").to_pylist()
    columns: dict[str, list] = {field.name: [] for field in EXAMPLE_SCHEMA}
    scored = score_under_edits(handle, layer, [prompts[i] for i in keep], [positions[i] for i in keep],
                               [answers[i] for i in keep], [candidates[i] for i in keep], edits.__getitem__,
                               batch_tokens=batch_tokens,
                               progress=Progress(len(keep), f"{side} layer {layer}, role {role}: {conditions[-1]}"))
    for n, _, score, names, gold in scored:
        i = keep[n]
        alternative = names.index(alternatives[i]) if alternatives[i] in names else None
        for k, condition in enumerate(conditions):
            columns["example_id"].append(ids[i])
            columns["mode"].append(modes[i])
            columns["hops"].append(hops[i])
            columns["layer"].append(layer)
            columns["role"].append(role)
            columns["condition"].append(condition)
            for column, value in score.gold_scores(k, gold).items():
                columns[column].append(value)
            columns["counterfactual_top1"].append(
                None if alternative is None else bool(np.argmax(score.logprob[k]) == alternative))
    return pa.table(columns, schema=EXAMPLE_SCHEMA)


def shared_rows(examples: pa.Table) -> pa.Table:
    return examples.filter(pc.equal(examples.column("mode"), MODE))


def sender_ablation_rows(handle: ModelHandle, examples: pa.Table,
                         layer: int, role: str, eval_store: ActivationStore, train_store: ActivationStore,
                         seed: int = 0, batch_tokens: int | None = None) -> pa.Table:
    """Per-example scores of the sender's own answer, clean and under each ablation, at one layer and role."""
    shared = shared_rows(examples)
    positions = role_positions_for_table(handle, shared, "sender", [role])[role]
    keys, states = eval_store.read(layer, role, [MODE])
    state_of = {key: row for row, key in enumerate(keys)}
    ids = shared.column("example_id").to_pylist()
    keep = [i for i, example_id in enumerate(ids) if positions[i] >= 0 and (example_id, MODE) in state_of]
    if len(keep) < 2:
        raise ValueError(f"fewer than two {MODE} examples have role {role!r} and sender states")
    _, train_states = train_store.read(layer, role, [MODE])
    mean = train_states.astype(np.float64).mean(axis=0)
    own = states[[state_of[(ids[i], MODE)] for i in keep]]
    resampled = own[derangement(len(keep), seed)]
    return _score_rows(handle, shared, keep, positions, layer, role,
                       [ablation_edits(mean, resampled[n]) for n in range(len(keep))], ("none", *ABLATIONS),
                       batch_tokens)


def donor_edits(handle: ModelHandle, donor_prompts: Sequence[str],
                donor_positions: np.ndarray, layer: int, batch_tokens: int | None) -> list[Edits]:
    """Per example: none, and the state replaced by the model's own state at ``donor_positions`` of its donor prompt."""
    donors = handle.prompt_ids(donor_prompts)
    rows = max(1, batch_tokens_or_default(batch_tokens) // max(len(ids) for ids in donors))  # the donor pass, sized in tokens too
    states = np.concatenate([
        hidden_states_at(handle.model, donors[begin:begin + rows], donor_positions[begin:begin + rows][:, None],
                         [layer], handle.pad_id, handle.device)[:, 0, 0]
        for begin in range(0, len(donors), rows)])  # [n, d]
    return [Edits(torch.tensor([1.0, 0.0]), torch.from_numpy(np.stack([np.zeros_like(state), state])),
                  torch.zeros(2, dtype=torch.bool)) for state in states]


def _donor_patch_rows(handle: ModelHandle, table: pa.Table, layer: int,
                      role: str, side: str, donor_side: str, condition: str, batch_tokens: int | None) -> pa.Table:
    """Scores on ``table``'s ``side`` prompts, clean and with the state at (layer, role) replaced by the model's
    own state at the same role of the ``donor_side`` prompt (``condition`` names the patched rows)."""
    positions = role_positions_for_table(handle, table, side, [role])[role]
    donor_positions = role_positions_for_table(handle, table, donor_side, [role])[role]
    keep = [i for i in range(table.num_rows) if positions[i] >= 0 and donor_positions[i] >= 0]
    if len(keep) < 2:
        raise ValueError(f"fewer than two examples have a {donor_side} prompt and role {role!r}")
    donors = table.column(f"{donor_side}_prompt").to_pylist()
    edits = donor_edits(handle, [donors[i] for i in keep], donor_positions[keep], layer, batch_tokens)
    return _score_rows(handle, table, keep, positions, layer, role, edits, ("none", condition),
                       batch_tokens, side=side)


def patching_rows(handle: ModelHandle, examples: pa.Table,
                  layer: int, role: str, batch_tokens: int | None = None) -> pa.Table:
    """Per-example scores on ``shared`` prompts, clean and with the state at (layer, role) taken from the
    counterfactual prompt. In ``shared`` mode both models read the full prompt, so this serves either."""
    shared = shared_rows(examples)
    shared = shared.filter(pc.is_valid(shared.column("counterfactual_prompt")))
    return _donor_patch_rows(handle, shared, layer, role, "sender", "counterfactual", "patch", batch_tokens)


def self_patch_rows(handle: ModelHandle, examples: pa.Table,
                    layer: int, role: str, batch_tokens: int | None = None) -> pa.Table:
    """Per-example scores of the receiver on its ``asymmetric`` and ``relay`` prompts, clean and with the state
    at (layer, role) taken from its own full-context prompt: what a perfect bridge could deliver there."""
    partial = examples.filter(pc.and_(pc.is_in(examples.column("mode"), pa.array(PARTIAL_MODES)),
                                      pc.not_equal(examples.column("receiver_prompt"), examples.column("full_prompt"))))
    tables = []
    for mode in sorted(set(partial.column("mode").to_pylist())):
        of_mode = partial.filter(pc.equal(partial.column("mode"), mode))
        positions = role_positions_for_table(handle, of_mode, "receiver", [role])[role]
        if (positions >= 0).sum() < 2:  # e.g. no bridge mention in a relay prompt
            continue
        tables.append(_donor_patch_rows(handle, of_mode, layer, role, "receiver", "full", "self_patch",
                                        batch_tokens))
    return _concat(tables)


def sender_causal_tables(handle: ModelHandle, examples: pa.Table, *,
                         layers: Sequence[int], roles: Sequence[str], eval_store: ActivationStore,
                         train_store: ActivationStore, batch_tokens: int | None = None
                         ) -> tuple[pa.Table, pa.Table]:
    """(ablation rows, patching rows) for every layer and role; patching where counterfactual prompts exist."""
    ablations, patches = [], []
    has_counterfactuals = ("counterfactual_prompt" in examples.column_names
                           and pc.sum(pc.is_valid(shared_rows(examples).column("counterfactual_prompt"))).as_py())
    for layer in layers:
        for role in roles:
            ablations.append(sender_ablation_rows(handle, examples, layer, role, eval_store, train_store,
                                                  seed=layer, batch_tokens=batch_tokens))
            if has_counterfactuals:
                patches.append(patching_rows(handle, examples, layer, role, batch_tokens))
            log.info("sender layer %d role %s: %d ablation rows, %d patching rows", layer, role,
                     ablations[-1].num_rows, patches[-1].num_rows if patches else 0)
    return pa.concat_tables(ablations), _concat(patches)


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables) if tables else EXAMPLE_SCHEMA.empty_table()


def receiver_causal_tables(handle: ModelHandle, examples: pa.Table, *,
                           layers: Sequence[int], roles: Sequence[str], batch_tokens: int | None = None
                           ) -> tuple[pa.Table, pa.Table]:
    """(counterfactual patching rows on shared prompts, self-patch rows on asymmetric and relay prompts) at
    the receiver's injection layers and roles; either is empty where the eval split has no such rows."""
    patches, self_patches = [], []
    has_counterfactuals = ("counterfactual_prompt" in examples.column_names
                           and pc.sum(pc.is_valid(shared_rows(examples).column("counterfactual_prompt"))).as_py())
    for layer in layers:
        for role in roles:
            if has_counterfactuals:
                patches.append(patching_rows(handle, examples, layer, role, batch_tokens))
            self_patches.append(self_patch_rows(handle, examples, layer, role, batch_tokens))
            log.info("receiver layer %d role %s: %d patching rows, %d self-patch rows", layer, role,
                     patches[-1].num_rows if patches else 0, self_patches[-1].num_rows)
    return _concat(patches), _concat(self_patches)


def _by_example(rows: pl.DataFrame, order: pl.DataFrame, condition: str) -> pl.DataFrame:
    """``condition``'s rows in the order of the examples ``order`` (the last row where one repeats)."""
    of_condition = rows.filter(condition=condition).unique("example_id", keep="last", maintain_order=True)
    aligned = order.join(of_condition.with_columns(_present=True), on="example_id", how="left",
                         maintain_order="left")
    missing = aligned.filter(pl.col("_present").is_null())["example_id"]
    if len(missing):
        raise ValueError(f"condition {condition!r} lacks {len(missing)} of the clean run's examples "
                         f"(e.g. {missing[0]!r}): the rows are incomplete")
    return aligned


def paired_effects(rows: pa.Table, conditions: Sequence[str], *, metrics: dict[str, str],
                   settings: StatsSettings) -> pa.Table:
    """Δ of each condition against ``none``, per context mode, layer, role and hop count (and all hops), with
    BCa CIs (:func:`actbridge.stats.paired.paired_statistics`, as the injection statistics).

    ``metrics`` maps a metric's name to its column. Holm families: the
    conditions x layers of one mode, role, hop subset and metric.
    """
    frame = pl.from_arrow(rows).with_columns(pl.col("hops").cast(pl.String))
    rng = np.random.Generator(np.random.PCG64(settings.seed))
    columns = [(condition, metric) for condition in conditions for metric in metrics]
    effects = []
    for (mode, role), of_role in sorted(frame.partition_by("mode", "role", as_dict=True).items()):
        hops = sorted(of_role["hops"].unique().to_list())
        for subset in (["all", *hops] if len(hops) > 1 else hops):  # "all" only where it pools several
            selected = of_role if subset == "all" else of_role.filter(hops=subset)
            for layer in sorted(selected["layer"].unique().to_list()):
                at_layer = selected.filter(layer=layer)
                clean = at_layer.filter(condition="none").unique("example_id", keep="last").sort("example_id")
                order = clean.select("example_id")
                values = {c: _by_example(at_layer, order, c) for c in dict.fromkeys(conditions)}
                sides = [(clean[metrics[m]].cast(pl.Float64).to_numpy(), values[c][metrics[m]].cast(pl.Float64)
                          .to_numpy()) for c, m in columns]
                statistics, _ = paired_statistics(sides, [m for _, m in columns], resamples=settings.resamples,
                                                  confidence=settings.confidence, rng=rng)
                effects.append(statistics.rename({"reference_value": "clean_value"}).with_columns(
                    mode=pl.lit(mode), layer=pl.lit(layer, pl.Int16), role=pl.lit(role), hops=pl.lit(subset),
                    condition=pl.Series([c for c, _ in columns], dtype=pl.String),
                    metric=pl.Series([m for _, m in columns], dtype=pl.String)))
    if not effects:
        return EFFECT_SCHEMA.empty_table()
    return to_arrow(with_holm(pl.concat(effects), ["mode", "role", "hops", "metric"]), EFFECT_SCHEMA)


def ablation_effects(rows: pa.Table, settings: StatsSettings) -> pa.Table:
    return paired_effects(rows, ABLATIONS, metrics=METRICS, settings=settings)


def patching_effects(rows: pa.Table, settings: StatsSettings) -> pa.Table:
    return paired_effects(rows, ("patch",), metrics=PATCH_METRICS, settings=settings)


def self_patch_effects(rows: pa.Table, settings: StatsSettings) -> pa.Table:
    return paired_effects(rows, ("self_patch",), metrics=METRICS, settings=settings)


def _points(row: dict) -> str:
    return interval(row["delta"], row["ci_low"], row["ci_high"], scale=100, decimals=1, missing=None)


def _logprob(row: dict) -> str:
    return interval(row["delta"], row["ci_low"], row["ci_high"], decimals=2, missing=None)


def _rate(value: float) -> str:
    return number(value, decimals=3, signed=False, missing=None)


EFFECT_KEY = ["role", "layer", "hops", "condition", "metric"]


def causal_markdown(effects: pa.Table, confidence: float) -> str:
    """Per role: each layer's ablation effect on the sender's own answer, then counterfactual patching."""
    keyed = pl.from_arrow(effects).unique(EFFECT_KEY, keep="last", maintain_order=True).sort(EFFECT_KEY)
    site = ["role", "layer", "hops", "condition"]
    lines = ["# Sender-side causal profile", "",
             "Does the sender's own answer (its `shared` prompts) depend on the states the bridges translate? "
             "`mean`: the state at that layer and role replaced by its bridge_train mean; `resample`: by another "
             "eval example's state; `patch`: by the state at the same role of the counterfactual prompt (the "
             "first hop's object swapped: another bridge entity, another answer). Δ = intervened − clean, with "
             f"{confidence:.0%} BCa intervals; Holm across the conditions × layers of one role, hop subset and "
             "metric.", ""]
    for role in sorted(keyed["role"].unique().to_list()):
        of_role = keyed.filter(role=role)
        # each ablation's accuracy row beside its log-probability row
        ablations = (of_role.filter(pl.col("metric") == "accuracy", pl.col("condition").is_in(list(ABLATIONS)))
                     .join(of_role.filter(metric="logprob"), on=site, how="left", suffix="_logprob",
                           maintain_order="left")
                     .join(of_role.filter(metric="first_token"), on=site, how="left", suffix="_first",
                           maintain_order="left"))
        cells = [[str(r["layer"]), r["hops"], str(r["n"]), _rate(r["clean_value"]), r["condition"], _points(r),
                  _points({key: r[f"{key}_first"] for key in ("delta", "ci_low", "ci_high")}),
                  _logprob({key: r[f"{key}_logprob"] for key in ("delta", "ci_low", "ci_high")}), f"{r['p_holm']:.2g}"]
                 for r in ablations.iter_rows(named=True)]
        lines += [f"## role `{role}`: ablation", "",
                  *table_lines(["layer", "hops", "n", "clean accuracy", "ablation", "Δ accuracy, points",
                                "Δ first token, points", "Δ gold log-prob", "p (Holm)"], cells)]
        # the rate at which the answer moves to the counterfactual's, beside the original answer's accuracy
        moved = (of_role.filter(condition="patch", metric="moved")
                 .join(of_role.filter(condition="patch", metric="accuracy"), on=site, how="left",
                       suffix="_accuracy", maintain_order="left"))
        if not moved.is_empty():
            cells = [[str(r["layer"]), r["hops"], str(r["n"]), f"{_rate(r['clean_value'])} → {_rate(r['value'])}",
                      _points(r), _points({key: r[f"{key}_accuracy"] for key in ("delta", "ci_low", "ci_high")}),
                      f"{r['p_holm']:.2g}"] for r in moved.iter_rows(named=True)]
            lines += ["", f"## role `{role}`: counterfactual patching", "",
                      *table_lines(["layer", "hops", "n", "answer = counterfactual's, clean → patched", "Δ, points",
                                    "Δ accuracy (original answer), points", "p (Holm, moved)"], cells)]
        lines.append("")
    return "\n".join(lines)


def receiver_causal_markdown(effects: pa.Table, confidence: float) -> str:
    """Per role and injection layer: does counterfactual patching move the receiver's answer (shared), and
    how much does self-patching from the full-context prompt restore (asymmetric, relay)?"""
    frame = pl.from_arrow(effects)
    lines = ["# Receiver-side causal profile", "",
             "At each receiver layer and role where a bridge injects. `patch` (shared prompts): the state replaced "
             "by the receiver's state on the counterfactual prompt; if the answer moves to the counterfactual's, "
             "the receiver reads its answer from this site. `self_patch` (asymmetric prompts, the first-hop fact "
             "missing; relay prompts, every fact of a 1-hop question missing): the state replaced by the "
             "receiver's own state on the full-context prompt; its gain is the upper bound any bridge could "
             f"deliver at this site in that mode. Δ = intervened − clean, {confidence:.0%} BCa intervals; Holm "
             "across the layers of one mode, role, hop subset and metric.", ""]
    partial_modes = sorted(frame.filter(condition="self_patch")["mode"].unique().to_list())
    header = ["layer", "counterfactual patch: answer moved, clean → patched", "Δ moved, points"]
    for mode in partial_modes:
        header += [f"self-patch ({mode}): accuracy, clean → patched", "Δ accuracy, points", "Δ first token, points",
                   "Δ gold log-prob", "p (Holm)"]
    for role in sorted(frame["role"].unique().to_list()):
        of_role = frame.filter(role=role)
        cells = []
        for layer in sorted(of_role["layer"].unique().to_list()):
            moved = pooled(of_role, role, layer, "patch", "moved")
            row = [str(layer), *([f"{_rate(moved['clean_value'])} → {_rate(moved['value'])}", _points(moved)] if moved
                                 else ["n/a", "n/a"])]
            for mode in partial_modes:
                gain, gain_first, gain_logprob = (pooled(of_role, role, layer, "self_patch", metric, mode=mode)
                                                  for metric in ("accuracy", "first_token", "logprob"))
                row += ([f"{_rate(gain['clean_value'])} → {_rate(gain['value'])}", _points(gain),
                         _points(gain_first) if gain_first else "n/a", _logprob(gain_logprob),
                         f"{gain['p_holm']:.2g}"] if gain else ["n/a"] * 5)
            cells.append(row)
        lines += [f"## role `{role}`", "", *table_lines(header, cells), ""]
    return "\n".join(lines)
