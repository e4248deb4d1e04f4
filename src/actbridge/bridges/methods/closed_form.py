"""Closed-form maps from second-moment statistics: memory O(d²) whatever the number of rows."""

from __future__ import annotations

from actbridge.bridges.maps import Moments
from actbridge.bridges.methods import BRIDGE_METHODS, BridgeMethod, FittedMap
from actbridge.bridges.solvers import fit_lowrank, fit_procrustes, fit_ridge


def _moments(stream):
    return Moments.of(stream(), outer_y=False)


class ClosedForm(BridgeMethod):
    """Reads the training stream once into :class:`Moments` (and the validation stream where it selects)."""

    def fit(self, train, val, settings, seed) -> FittedMap:
        train_moments = _moments(train)
        weight, bias, info = self.solve(train_moments, val, settings)
        info["train_rows"] = train_moments.n
        return FittedMap(weight, bias, info)

    def solve(self, train, val, settings):
        raise NotImplementedError


@BRIDGE_METHODS.register
class Ridge(ClosedForm):
    name = "ridge"
    order = 0
    summary = "ridge regression, penalty chosen on bridge_val"
    keys = ("ridge_penalties",)
    colour = "tab:blue"

    def solve(self, train, val, settings):
        return fit_ridge(train, _moments(val), settings["ridge_penalties"])


@BRIDGE_METHODS.register
class Procrustes(ClosedForm):
    name = "procrustes"
    order = 2
    summary = "scaled orthogonal map (semi-orthogonal across widths)"
    colour = "tab:green"

    def solve(self, train, val, settings):
        return fit_procrustes(train)


@BRIDGE_METHODS.register
class LowRank(ClosedForm):
    name = "lowrank"
    order = 3
    summary = "reduced-rank ridge: the ridge map on its top-`rank` fitted directions"
    keys = ("ridge_penalties", "rank")
    colour = "tab:red"

    def solve(self, train, val, settings):
        return fit_lowrank(train, _moments(val), settings["ridge_penalties"], settings["rank"])
