"""Maps trained by Adam on normalized pairs, with early stopping on bridge_val."""

from __future__ import annotations

from actbridge.bridges.maps import materialize
from actbridge.bridges.methods import BRIDGE_METHODS, BridgeMethod, FittedMap
from actbridge.bridges.solvers import IterativeSettings, fit_iterative


class Iterative(BridgeMethod):
    uses_torch = True
    hidden_layer = False

    def fit(self, train, val, settings, seed) -> FittedMap:
        x_train, y_train = materialize(train)
        x_val, y_val = materialize(val)
        tensors, info = fit_iterative(x_train, y_train, x_val, y_val, IterativeSettings(**settings[self.name]), seed,
                                      mlp=self.hidden_layer)
        info["train_rows"] = len(x_train)
        return FittedMap(tensors["weight"], tensors["bias"], info, tensors.get("hidden_weight"),
                         tensors.get("hidden_bias"))


@BRIDGE_METHODS.register
class Sgd(Iterative):
    name = "sgd"
    order = 1
    summary = "linear map trained by Adam (`bridge.sgd`: loss mse or cosine)"
    keys = ("sgd",)
    settings_schema = {"sgd": {"$ref": "#/$defs/iterative", "default": {}}}
    colour = "tab:orange"


@BRIDGE_METHODS.register
class Mlp(Iterative):
    name = "mlp"
    order = 4
    summary = "one GELU hidden layer trained by Adam (`bridge.mlp`)"
    keys = ("mlp",)
    settings_schema = {"mlp": {"$ref": "#/$defs/iterative", "default": {}}}
    hidden_layer = True
    colour = "tab:purple"
