"""One ridge map per receiver block, for keys and values apart, with the penalty chosen on bridge_val."""

from __future__ import annotations

from actbridge.bridges.solvers import fit_ridge
from actbridge.kv.maps import KV_MAPS, AffineMap, KVMap


@KV_MAPS.register
class Ridge(KVMap):
    name = "ridge"
    order = 1
    summary = "ridge regression per block, keys and values apart, penalty chosen on bridge_val"
    settings_schema = {"penalties": {
        "description": "ridge penalties tried, per row and relative to the mean variance of the sender's entries",
        "type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1,
        "default": [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]}}
    colour = "tab:blue"

    def fit(self, train, val, settings) -> AffineMap:
        cxx, _, _ = train.centered()
        scale = max(float(cxx.trace()) / (len(cxx) * max(train.n, 1)), 1e-12)  # mean variance of the inputs
        weight, bias, info = fit_ridge(train, val, [scale * p for p in settings["penalties"]])
        info["penalty"] = info["penalty"] / scale
        return AffineMap(weight, bias, info)
