"""Bridge methods: each one class, registered in :data:`BRIDGE_METHODS`.

A method fits a map between *normalized* states (see :mod:`actbridge.bridges.maps`) from a training
and a validation stream of (sender, receiver) rows. Adding one is one module in this package: a
subclass of :class:`BridgeMethod` decorated with ``@BRIDGE_METHODS.register``. Its class attributes
say which ``bridge.*`` keys it reads (so tuning one method never refits another), the schema of its
own keys, whether it is in the default ``bridge.methods``, whether it needs torch or the receiver,
and how it is drawn. Its :meth:`~BridgeMethod.fit` receives exactly those keys, validated
(:meth:`BridgeMethod.settings`). The table of every registered method is in config/README.md.

A method module may import anything of the stages below ``injection`` (the maps, the solvers, the
models), at its top: the configuration imports no registry (see docs/extending.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from actbridge.bridges.maps import Bridge, Normalizer, PairStream, normalized, subsampled
from actbridge.config import checked_value, schema_fragment
from actbridge.registry import ItemKeys, Registry, import_all


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

    def fit(self, train: PairStream, val: PairStream, settings: ItemKeys, seed: int) -> FittedMap:
        """The map from the normalized ``train`` rows (a seed's subsample), selected on ``val``; ``settings`` are
        the ``bridge.*`` keys it declares (``subsample`` and :attr:`keys`), validated."""
        raise NotImplementedError

    @classmethod
    def trainer_settings(cls, settings: ItemKeys) -> Any:
        """A method trained through the receiver: what its trainer reads, from its validated keys."""
        raise NotImplementedError(f"bridge method {cls.name} is not trained through the receiver")

    @classmethod
    def declared(cls) -> tuple[str, ...]:
        """Every ``bridge.*`` key it reads: ``subsample`` (each seed's rows) and its :attr:`keys`."""
        return ("subsample", *cls.keys)

    @classmethod
    def settings(cls, bridge: Mapping[str, Any] | None = None) -> ItemKeys:
        """Its declared keys, taken from ``bridge`` (the ``bridge.*`` section, or any part of it; absent keys
        take the schema's defaults), validated and with nested defaults filled in. Raises
        :class:`actbridge.config.ConfigError` naming a key whose value the schema rejects."""
        bridge = bridge or {}
        values = {}
        for key in cls.declared():
            fragment = cls.settings_schema.get(key) or schema_fragment(f"bridge.{key}")
            values[key] = checked_value(fragment, bridge.get(key), key=f"bridge.{key}")
        return ItemKeys(f"bridge method {cls.name}", "bridge", values)


BRIDGE_METHODS: Registry[BridgeMethod] = Registry("bridge method", "bridge.methods")


def default_methods() -> list[str]:
    return list(BRIDGE_METHODS.names(lambda m: m.in_default))


def offline_method(name: str) -> str:
    """The offline fit a method's job starts from: itself, or the start of a method trained through the receiver."""
    method = BRIDGE_METHODS[name]
    return method.start if method.through_receiver else name


def fit_bridge(method: str, train: PairStream, val: PairStream, sender: Normalizer, receiver: Normalizer, *,
               settings: Mapping[str, Any] | None = None, seed: int) -> Bridge:
    """Fit ``method`` on a ``seed``-subsample of ``train`` (raw pairs), selecting on ``val``.

    ``sender``/``receiver`` are the normalizers fitted on all of bridge_train. ``settings``: the ``bridge.*``
    keys (all of them or only the method's; absent ones take their defaults); the method sees only its own.
    """
    chosen = BRIDGE_METHODS[method]
    keys = chosen.settings(settings)
    fitted = chosen().fit(normalized(subsampled(train, keys["subsample"], seed), sender, receiver),
                          normalized(val, sender, receiver), keys, seed)
    fitted.info["seed"] = seed
    return Bridge(method, sender, receiver, fitted.weight, fitted.bias, fitted.hidden_weight, fitted.hidden_bias,
                  fitted.info)


def extend_schema(schema: dict) -> None:
    """The schema's part of this registry (in place): the enums that name a method, the default
    ``bridge.methods``, and each method's own keys under ``bridge.*``."""
    top = schema["properties"]
    bridge = top["bridge"]["properties"]
    methods = list(BRIDGE_METHODS.names())
    bridge["methods"]["items"] = {"enum": methods}
    bridge["methods"]["default"] = default_methods()
    top["injection"]["properties"]["methods"]["items"] = {"enum": methods}
    top["figures"]["properties"]["method"]["enum"] = methods
    for method in BRIDGE_METHODS.values():
        for key, fragment in method.settings_schema.items():
            if key in bridge:
                raise ValueError(f"bridge method {method.name}: key bridge.{key} is already defined")
            bridge[key] = copy.deepcopy(fragment)


def markdown_table() -> str:
    """Every registered method: what it fits, the keys it reads, and whether it runs by default."""
    lines = ["| method | fits | reads `bridge.*` | default |", "|---|---|---|---|"]
    for method in BRIDGE_METHODS.values():
        keys = ", ".join(f"`{key}`" for key in ("subsample", *method.keys))
        lines.append(f"| `{method.name}` | {method.summary} | {keys} | {'yes' if method.in_default else 'no'} |")
    return "\n".join(lines) + "\n"


import_all(__name__)
