"""Bridge methods: each one class, registered in :data:`BRIDGE_METHODS`.

A method fits a map between *normalized* states (see :mod:`actbridge.bridges.maps`) from a training
and a validation stream of (sender, receiver) rows. Adding one is one module in this package: a
subclass of :class:`BridgeMethod` decorated with ``@BRIDGE_METHODS.register``. Its class attributes
say which ``bridge.*`` keys it reads (so tuning one method never refits another), the schema of its
own keys, whether it is in the default ``bridge.methods``, whether it needs torch or the receiver,
and how it is drawn. The table of every registered method is in config/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from actbridge.registry import Registry, import_all

if TYPE_CHECKING:
    from actbridge.bridges.maps import BridgeSettings, PairStream


@dataclass
class FittedMap:
    """``y_n = x_n @ weight + bias`` (with a GELU hidden layer first where ``hidden_weight`` is set)."""

    weight: np.ndarray  # [d_s, d_r] (with a hidden layer: [hidden, d_r])
    bias: np.ndarray  # [d_r]
    info: dict
    hidden_weight: np.ndarray | None = None  # [d_s, hidden]
    hidden_bias: np.ndarray | None = None


class BridgeMethod:
    """One bridge method. Subclasses set the class attributes and :meth:`fit`."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for the docs table
    keys: ClassVar[tuple[str, ...]] = ()  # bridge.* keys it reads (besides subsample), so only they rerun it
    settings_schema: ClassVar[dict[str, dict]] = {}  # JSON schema of keys under bridge.* that only it reads
    in_default: ClassVar[bool] = True  # in the default bridge.methods
    uses_torch: ClassVar[bool] = False  # its job imports torch (a closed-form fit never waits for that import)
    # Trained through the frozen receiver from the offline fit of ``start`` (the job then needs the receiver
    # and the prompts of bridge_train and bridge_val, and runs where the models run).
    through_receiver: ClassVar[bool] = False
    start: ClassVar[str | None] = None
    colour: ClassVar[str] = "0.3"

    def fit(self, train: "PairStream", val: "PairStream", settings: "BridgeSettings", seed: int) -> FittedMap:
        """The map from the normalized ``train`` rows (a seed's subsample), selected on ``val``."""
        raise NotImplementedError


BRIDGE_METHODS: Registry[BridgeMethod] = Registry("bridge method", "bridge.methods")


def default_methods() -> list[str]:
    return list(BRIDGE_METHODS.names(lambda m: m.in_default))


def offline_method(name: str) -> str:
    """The offline fit a method's job starts from: itself, or the start of a method trained through the receiver."""
    method = BRIDGE_METHODS[name]
    return method.start if method.through_receiver else name


def markdown_table() -> str:
    """Every registered method: what it fits, the keys it reads, and whether it runs by default."""
    lines = ["| method | fits | reads `bridge.*` | default |", "|---|---|---|---|"]
    for method in BRIDGE_METHODS.values():
        keys = ", ".join(f"`{key}`" for key in ("subsample", *method.keys))
        lines.append(f"| `{method.name}` | {method.summary} | {keys} | {'yes' if method.in_default else 'no'} |")
    return "\n".join(lines) + "\n"


import_all(__name__)
