"""Injection conditions: each one class, registered in :data:`CONDITIONS`.

A condition edits the receiver's clean state ``h`` at the injection site (see
:mod:`actbridge.models.edited_scoring`): ``h' = keep * h + (||h|| if norm_scaled else 1) * vector``,
optionally minus ``h``'s component in a subspace; or, where the edit depends on ``h`` itself, through
its own batched ``transform(h, source)``. ``b`` is the bridge's output for the example, in
the receiver's raw space. The table of every registered condition (``python -m
actbridge.injection.conditions``) is in config/README.md.

Adding one is one module in this package: a subclass of :class:`Condition` decorated with
``@CONDITIONS.register``. Its class attributes say everything else needs to know: whether it runs
once per α, whether it is in the default ``injection.conditions``, its config keys under
``injection.<name>`` (a JSON-schema fragment with defaults), the stored states it reads
(:data:`NEEDS`), the unscaled twin a rescaled condition is contrasted with, and how it is drawn.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from actbridge.config import checked_value
from actbridge.registry import ItemKeys, Registry, import_all
from actbridge.schemas import BASELINE  # noqa: F401 - the baseline condition, named where the tables are

# A stored state set a condition may read beyond what every injection job has (the sender's and the receiver's
# eval states): name -> (model, split) of the activation shards; the job gets them as inputs of that name.
NEEDS: dict[str, tuple[str, str]] = {"sender_bridge_train": ("sender", "bridge_train")}
# Every stored state set an injection job may read: the two every job reads, and NEEDS.
STORE_INPUTS: dict[str, tuple[str, str]] = {"sender_eval": ("sender", "eval"), "receiver_eval": ("receiver", "eval"),
                                            **NEEDS}


@dataclass(frozen=True)
class ConditionInputs:
    """Vectors for one example, each [d] in the receiver's raw space."""

    bridged: np.ndarray  # b
    shuffled: np.ndarray  # b of another example
    random_direction: np.ndarray  # unit vector
    mean: np.ndarray  # receiver's bridge_train mean at this layer and role
    full_context: np.ndarray | None  # receiver's own state on the full prompt (self_patch)
    mode: str = ""  # the example's context mode (which fit of the bridge serves it)


@dataclass(frozen=True)
class Edit:
    """One edit: ``h' = keep * h + (||h|| if norm_scaled else 1) * vector - U U^T h`` (U = ``project_out``),
    the fast path; or, with a ``transform``, ``h' = transform(h, source)`` (:meth:`transformed`)."""

    keep: float
    vector: np.ndarray  # [d]
    norm_scaled: bool = False
    project_out: np.ndarray | None = None  # [d, r], orthonormal columns
    # batched over every state it edits, in torch: (h [m, d], source [m, d]) -> h' [m, d]
    transform: Callable[[Any, Any], Any] | None = None
    source: np.ndarray | None = None  # [d]

    @classmethod
    def transformed(cls, transform: Callable[[Any, Any], Any], source: np.ndarray) -> "Edit":
        """``h' = transform(h, source)``: for a condition that must see h (see :meth:`Condition.transform`)."""
        return cls(1.0, np.zeros_like(source), transform=transform, source=np.asarray(source))


@dataclass(frozen=True)
class Style:
    """How figures draw a condition: in the α sweep (``alpha``), in the replacement bars (``replacement``),
    or in neither (``None``), with a matplotlib colour and line style."""

    figure: str | None
    colour: str = "0.5"
    line: str = "-"


@dataclass(frozen=True)
class InjectionContext:
    """What a condition may read once per injection job and role, before any example is edited."""

    role: str
    sender_layer: int
    receiver_layer: int
    bridges: Mapping[str, Any]  # eval mode -> Bridge (actbridge.bridges.maps.Bridge)
    fit_modes: Mapping[str, Sequence[str]]  # eval mode -> the context modes its bridge was fitted on
    settings: Mapping[str, Any]  # injection.<name> of this condition, validated (Condition.settings), {} if none
    stores: Mapping[str, Any] = field(default_factory=dict)  # NEEDS name -> ActivationStore


class Condition:
    """One injection condition. Subclasses set the class attributes and :meth:`edit`."""

    name: ClassVar[str]
    formula: ClassVar[str]  # h' in words, for the docs table and the summaries
    purpose: ClassVar[str]  # why it is run
    alpha_scaled: ClassVar[bool] = False  # run once per injection.alphas value
    in_default: ClassVar[bool] = True  # in the default injection.conditions
    rescaled_twin: ClassVar[str | None] = None  # a norm-rescaled condition's unscaled twin (contrasted at equal α)
    needs_missing_facts: ClassVar[bool] = False  # scored only where the receiver's prompt lacks facts of the full one
    needs_full_context: ClassVar[bool] = False  # reads the receiver's full-context state (ConditionInputs.full_context)
    needs: ClassVar[frozenset[str]] = frozenset()  # NEEDS entries it reads in prepare()
    settings_schema: ClassVar[dict[str, dict]] = {}  # JSON schema of each injection.<name>.<key>, with defaults
    style: ClassVar[Style] = Style(None)

    @classmethod
    def settings_fragment(cls) -> dict:
        """The schema of ``injection.<name>``: an object of its own keys, each with its default."""
        return {"description": f"settings of the {cls.name} condition (read only where it is injected)",
                "type": "object", "additionalProperties": False, "default": {},
                "properties": copy.deepcopy(cls.settings_schema)}

    @classmethod
    def settings(cls, values: Mapping[str, Any] | None = None) -> ItemKeys:
        """Its ``injection.<name>`` keys from ``values`` (absent ones take their defaults), validated: the only
        keys it may read. Raises :class:`actbridge.config.ConfigError` naming a key the schema rejects."""
        return ItemKeys(f"condition {cls.name}", f"injection.{cls.name}",
                        checked_value(cls.settings_fragment(), dict(values or {}), key=f"injection.{cls.name}"))

    def prepare(self, context: InjectionContext) -> "Condition":
        """This condition bound to one job and role (the default needs nothing beyond ConditionInputs)."""
        return self

    def edit(self, alpha: float | None, inputs: ConditionInputs) -> Edit:
        """The example's edit, from its vectors: the linear form, or :meth:`Edit.transformed` with this
        condition's :meth:`transform` where the edit depends on h itself."""
        raise NotImplementedError

    # Optional: a condition that must see the state it edits defines ``transform(h, source) -> h'``, batched
    # over every state it edits (torch tensors [m, d]), in the spirit of pyvene's ``forward(base, source)``;
    # its ``edit`` returns ``Edit.transformed(self.transform, source)``. The engine calls it inside the same
    # hook on the fast and the naive path (see orthogonal_add.py).


CONDITIONS: Registry[Condition] = Registry("injection condition", "injection.conditions")


def store_inputs(conditions: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The stored states an injection job with ``conditions`` reads: input name -> (model, split)."""
    needed = {need for name in conditions for need in CONDITIONS[name].needs}
    return {name: where for name, where in STORE_INPUTS.items()
            if name in ("sender_eval", "receiver_eval") or name in needed}


def default_conditions() -> list[str]:
    return list(CONDITIONS.names(lambda c: c.in_default))


def alpha_scaled() -> frozenset[str]:
    return frozenset(CONDITIONS.names(lambda c: c.alpha_scaled))


def rescaled_twins() -> dict[str, str]:
    """Rescaled condition -> its unscaled twin."""
    return {c.name: c.rescaled_twin for c in CONDITIONS.values() if c.rescaled_twin}


def condition_labels(conditions: Sequence[str], alphas: Sequence[float]) -> list[tuple[str, float | None]]:
    """(condition, α) for every edit: α-free conditions once, the others once per α."""
    labels: list[tuple[str, float | None]] = []
    for name in conditions:
        if CONDITIONS[name].alpha_scaled:
            labels.extend((name, float(alpha)) for alpha in alphas)
        else:
            labels.append((name, None))
    return labels


def bind(conditions: Sequence[str], context: InjectionContext, settings: Mapping[str, Mapping]) -> dict[str, Condition]:
    """Each condition prepared for one job and role; ``settings[name]`` is its ``injection.<name>`` (absent:
    its defaults), handed to it validated and limited to the keys it declares."""
    return {name: CONDITIONS[name]().prepare(replace(context, settings=CONDITIONS[name].settings(settings.get(name))))
            for name in conditions}


def edit_for(condition: str, alpha: float | None, inputs: ConditionInputs,
             bound: Mapping[str, Condition] | None = None) -> Edit:
    """One condition's edit (``bound``: the conditions prepared for this job, where some need it)."""
    chosen = bound[condition] if bound is not None and condition in bound else CONDITIONS[condition]()
    return chosen.edit(alpha, inputs)


def extend_schema(schema: dict) -> None:
    """The schema's part of this registry (in place): the enum of ``injection.conditions``, its default, and
    each condition's own keys under ``injection.<name>``."""
    injection = schema["properties"]["injection"]["properties"]
    injection["conditions"]["items"] = {"enum": list(CONDITIONS.names())}
    injection["conditions"]["default"] = default_conditions()
    for condition in CONDITIONS.values():
        if condition.settings_schema:
            injection[condition.name] = condition.settings_fragment()


def markdown_table() -> str:
    """Every registered condition: its h', whether it sweeps α, its config keys and why it is run."""
    lines = ["| condition | h′ | α | default | keys | why |", "|---|---|---|---|---|---|"]
    for condition in CONDITIONS.values():
        keys = ", ".join(f"`injection.{condition.name}.{key}` (default {schema.get('default')})"
                         for key, schema in condition.settings_schema.items()) or "–"
        lines.append(f"| `{condition.name}` | {condition.formula} | {'per α' if condition.alpha_scaled else '–'} | "
                     f"{'yes' if condition.in_default else 'no'} | {keys} | {condition.purpose} |")
    return "\n".join(lines) + "\n"


from actbridge.injection.conditions import standard  # noqa: E402,F401 - the built-ins first, in their order

import_all(__name__)
