"""The KV channel's conditions: each one class, registered in :data:`KV_CONDITIONS`.

Every condition of an example puts entries between the receiver's head and its tail (:mod:`actbridge.kv.
segments`), or none. A condition says which entries, as keys before rotation (the channel rotates them for the
positions they take) or as the receiver's own cache, already rotated. ``none`` (no entries: the receiver's own
prompt) is the baseline every condition is paired with; ``kv_own`` (the receiver's own cache of the sender's
context: the full-context prompt) is the channel's upper bound, as ``self_patch`` is the residual channel's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from actbridge.registry import Registry
from actbridge.schemas import BASELINE

# Per receiver block, (keys, values) torch tensors [kv_heads, m, head_dim]. Named, not imported: the workflow and
# the statistics read this registry where torch is not installed.
Entries = "list[tuple[torch.Tensor, torch.Tensor]]"


@dataclass(frozen=True)
class RowEntries:
    """What the conditions of one example may put in the receiver's cache, per receiver block."""

    sent: Entries  # the sender's context entries through the map (keys before rotation)
    shuffled: Entries  # another example's (same context mode), through the map
    mean: Entries  # the receiver's mean entry (bridge_train), once per sent entry
    own: Entries  # the receiver's own cache of the sender's context (rotated, as its pass left it)


@dataclass(frozen=True)
class Injected:
    """Entries a condition puts in the cache: ``rotated`` when they are already at their positions; ``sent_only``
    when blocks outside ``kv.layers_sent`` must not see them (the channel's layer selection)."""

    entries: Entries
    rotated: bool | tuple[bool, ...] = False  # or per receiver block (a mix of own and mapped entries)
    sent_only: bool = True

    def rotated_in(self, block: int) -> bool:
        return self.rotated if isinstance(self.rotated, bool) else self.rotated[block]


class KVCondition:
    name: ClassVar[str]
    formula: ClassVar[str]  # what sits between head and tail, for the docs table and the summaries
    purpose: ClassVar[str]
    upper_bound: ClassVar[bool] = False
    in_default: ClassVar[bool] = True
    colour: ClassVar[str] = "0.5"

    def injected(self, row: RowEntries) -> Injected | None:
        """The example's entries, or None for none at all."""
        raise NotImplementedError


KV_CONDITIONS: Registry[KVCondition] = Registry("KV condition", "kv.conditions")


@KV_CONDITIONS.register
class NoEntries(KVCondition):
    name = BASELINE
    order = 0
    formula = "nothing: the receiver's own prompt"
    purpose = "the baseline every condition is paired with"

    def injected(self, row):
        return None


@KV_CONDITIONS.register
class Sent(KVCondition):
    name = "kv_sent"
    order = 1
    formula = "the sender's context entries through the map"
    purpose = "the channel itself"
    colour = "tab:blue"

    def injected(self, row):
        return Injected(row.sent)


@KV_CONDITIONS.register
class Shuffled(KVCondition):
    name = "kv_shuffled"
    order = 2
    formula = "another example's mapped entries (same context mode)"
    purpose = "null: entries of the right kind that carry the wrong facts"
    colour = "tab:orange"

    def injected(self, row):
        return Injected(row.shuffled)


@KV_CONDITIONS.register
class Mean(KVCondition):
    name = "kv_mean"
    order = 3
    formula = "the receiver's mean entry, once per sent entry"
    purpose = "null: as many entries, carrying nothing of the example"
    colour = "tab:gray"

    def injected(self, row):
        return Injected(row.mean)


@KV_CONDITIONS.register
class Own(KVCondition):
    name = "kv_own"
    order = 4
    formula = "the receiver's own cache of the sender's context, in every block"
    purpose = "upper bound: the full-context prompt, what a perfect map delivers"
    upper_bound = True
    colour = "black"

    def injected(self, row):
        return Injected(row.own, rotated=True, sent_only=False)


def default_conditions() -> list[str]:
    return list(KV_CONDITIONS.names(lambda c: c.in_default))


def upper_bounds() -> frozenset[str]:
    return frozenset(KV_CONDITIONS.names(lambda c: c.upper_bound))


def scored_labels(conditions: Sequence[str]) -> list[str]:
    """The baseline first, then the other conditions in registry order."""
    chosen = set(conditions) | {BASELINE}
    return [name for name in KV_CONDITIONS.names() if name in chosen]


def extend_schema(schema: dict) -> None:
    """The schema's part of this registry (in place): the enum and default of ``kv.conditions``."""
    kv = schema["properties"]["kv"]["properties"]
    kv["conditions"]["items"] = {"enum": list(KV_CONDITIONS.names())}
    kv["conditions"]["default"] = default_conditions()


def markdown_table() -> str:
    lines = ["| condition | between head and tail | why |", "|---|---|---|"]
    for condition in KV_CONDITIONS.values():
        lines.append(f"| `{condition.name}` | {condition.formula} | {condition.purpose} |")
    return "\n".join(lines) + "\n"
