"""The bridge trained end to end through the frozen receiver (see :mod:`actbridge.bridges.through_receiver`)."""

from __future__ import annotations

from dataclasses import dataclass

from actbridge.bridges.methods import BRIDGE_METHODS, BridgeMethod
from actbridge.registry import ItemKeys


@dataclass(frozen=True)
class TrainedSettings:
    """``bridge.trained``, validated: the keys and their defaults are declared once, in
    :attr:`Trained.settings_schema`."""

    epochs: int
    learning_rate: float
    batch_size: int
    injection: str  # replace | add
    max_rows: int  # training rows drawn (by seed) from bridge_train: a forward and backward pass each
    patience: int  # stop after this many epochs in a row without a better bridge_val loss

    @classmethod
    def of(cls, **overrides) -> "TrainedSettings":
        """The defaults with ``overrides``, validated (a bad value is a ConfigError naming its key)."""
        return Trained.trainer_settings(Trained.settings({"trained": overrides}))


@BRIDGE_METHODS.register
class Trained(BridgeMethod):
    name = "trained"
    order = 5
    summary = "the ridge map trained further on the receiver's answer loss, through the frozen receiver"
    # it starts from the ridge fit, so it reads the ridge keys too
    keys = ("ridge_penalties", "trained")
    settings_schema = {"trained": {
        "description": "the bridge trained end to end through the frozen receiver on the answer loss",
        "type": "object", "additionalProperties": False, "default": {},
        "properties": {
            "epochs": {"type": "integer", "minimum": 1, "default": 8},
            "learning_rate": {"type": "number", "exclusiveMinimum": 0, "default": 0.002},
            "batch_size": {"type": "integer", "minimum": 1, "default": 16},
            "injection": {"enum": ["replace", "add"], "default": "replace"},
            "max_rows": {"type": "integer", "minimum": 2, "default": 4000},
            "patience": {"type": "integer", "minimum": 1, "default": 2},
        }}}
    in_default = False
    uses_torch = True
    through_receiver = True
    start = "ridge"
    colour = "tab:cyan"

    @classmethod
    def trainer_settings(cls, settings: ItemKeys) -> TrainedSettings:
        """What :func:`actbridge.bridges.through_receiver.receiver_trainer` trains with, from its keys."""
        return TrainedSettings(**settings["trained"])
