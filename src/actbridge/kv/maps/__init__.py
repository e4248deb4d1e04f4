"""KV map kinds: each one class, registered in :data:`KV_MAPS`.

A map kind turns the sender's entries of one block (keys before rotation, or values; [m, kv_heads_s x
head_dim_s]) into entries of the receiver block it is paired with ([m, kv_heads_r x head_dim_r]), one affine
map per receiver block for keys and one for values. It is fitted from the streaming moments of aligned pairs
of entries: the two models' entries at the same word ends of the ``shared`` bridge_train prompts (train) and
bridge_val prompts (val), the target being the receiver's own entries on the same text.

Adding one is one module in this package: a subclass of :class:`KVMap` decorated with ``@KV_MAPS.register``.
Its class attributes say whether it needs equal shapes and which keys it reads under ``kv.<name>``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from actbridge.bridges.maps import Moments
from actbridge.config import checked_value
from actbridge.registry import ItemKeys, Registry, import_all


@dataclass
class AffineMap:
    """``y = x @ weight + bias`` for one block's keys or values, and what its fit found."""

    weight: np.ndarray  # [width_s, width_r]
    bias: np.ndarray  # [width_r]
    info: dict


class KVMap:
    """One map kind. Subclasses set the class attributes and :meth:`fit`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    needs_equal_shapes: ClassVar[bool] = False  # the sender's blocks and entries have the receiver's shape
    settings_schema: ClassVar[dict[str, dict]] = {}  # JSON schema of each kv.<name>.<key>, with defaults
    colour: ClassVar[str] = "0.3"

    @classmethod
    def settings_fragment(cls) -> dict:
        return {"description": f"settings of the {cls.name} KV map (read only where it is fitted)",
                "type": "object", "additionalProperties": False, "default": {},
                "properties": copy.deepcopy(cls.settings_schema)}

    @classmethod
    def settings(cls, values: Mapping[str, Any] | None = None) -> ItemKeys:
        return ItemKeys(f"KV map {cls.name}", f"kv.{cls.name}",
                        checked_value(cls.settings_fragment(), dict(values or {}), key=f"kv.{cls.name}"))

    def fit(self, train: Moments, val: Moments, settings: ItemKeys) -> AffineMap:
        raise NotImplementedError


KV_MAPS: Registry[KVMap] = Registry("KV map kind", "kv.maps")


def shapes_problem(kind: str, sender: Mapping[str, int], receiver: Mapping[str, int]) -> str | None:
    """Why map ``kind`` cannot join caches of these shapes (num_layers, kv_heads, head_dim); None if it can."""
    if not KV_MAPS[kind].needs_equal_shapes:
        return None
    differing = {key: (sender.get(key), receiver.get(key)) for key in ("num_layers", "kv_heads", "head_dim")
                 if sender.get(key) != receiver.get(key)}
    if not differing:
        return None
    shown = ", ".join(f"{key} {s} vs {r}" for key, (s, r) in differing.items())
    return (f"config key kv.maps: the {kind} KV map needs caches of equal shape, but sender and receiver differ "
            f"({shown}); use ridge")


def extend_schema(schema: dict) -> None:
    """The schema's part of this registry (in place): the enum of ``kv.maps`` and each kind's own keys."""
    kv = schema["properties"]["kv"]["properties"]
    kv["maps"]["items"] = {"enum": list(KV_MAPS.names())}
    for kind in KV_MAPS.values():
        kv[kind.name] = kind.settings_fragment()


def markdown_table() -> str:
    lines = ["| map | fits | keys | needs equal shapes |", "|---|---|---|---|"]
    for kind in KV_MAPS.values():
        keys = ", ".join(f"`kv.{kind.name}.{key}`" for key in kind.settings_schema) or "–"
        lines.append(f"| `{kind.name}` | {kind.summary} | {keys} | {'yes' if kind.needs_equal_shapes else 'no'} |")
    return "\n".join(lines) + "\n"


import_all(__name__)
