"""The bridge trained end to end through the frozen receiver (see :mod:`actbridge.bridges.through_receiver`)."""

from __future__ import annotations

from actbridge.bridges.methods import BRIDGE_METHODS, BridgeMethod


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
