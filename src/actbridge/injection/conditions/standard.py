"""The reference study's conditions and their controls."""

from __future__ import annotations

import numpy as np

from actbridge.injection.conditions import CONDITIONS, Condition, ConditionInputs, Edit, Style


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else np.zeros_like(vector)


@CONDITIONS.register
class NoEdit(Condition):
    name = "none"
    formula = "h"
    purpose = "the baseline every other condition is paired with"

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        return Edit(1.0, np.zeros_like(inputs.bridged))


@CONDITIONS.register
class Add(Condition):
    name = "add"
    formula = "h + α b"
    purpose = "the reference study's additive injection"
    alpha_scaled = True
    style = Style("alpha", "tab:blue", "-")

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        return Edit(1.0, alpha * inputs.bridged)


@CONDITIONS.register
class AddRescaled(Condition):
    name = "add_rescaled"
    formula = "h + α (‖h‖/‖b‖) b"
    purpose = "α as a fraction of the receiver's own norm"
    alpha_scaled = True
    rescaled_twin = "add"
    style = Style("alpha", "tab:orange", "-")

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        return Edit(1.0, alpha * _unit(inputs.bridged), norm_scaled=True)


@CONDITIONS.register
class Replace(Condition):
    name = "replace"
    formula = "b"
    purpose = "the bridged state instead of the receiver's"
    style = Style("replacement", "tab:blue")

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        return Edit(0.0, inputs.bridged)


@CONDITIONS.register
class ReplaceRescaled(Condition):
    name = "replace_rescaled"
    formula = "(‖h‖/‖b‖) b"
    purpose = "the bridged state at the receiver's norm"
    rescaled_twin = "replace"
    style = Style("replacement", "tab:orange")

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        return Edit(0.0, _unit(inputs.bridged), norm_scaled=True)


@CONDITIONS.register
class Interpolate(Condition):
    name = "interpolate"
    formula = "(1 − α) h + α b"
    purpose = "a path from the receiver's state to the bridged one"
    alpha_scaled = True
    style = Style("alpha", "tab:purple", "-.")

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        return Edit(1.0 - alpha, alpha * inputs.bridged)


@CONDITIONS.register
class RandomDirection(Condition):
    name = "random"
    formula = "h + α r, ‖r‖ = ‖b‖"
    purpose = "add's control: same norm, random direction"
    alpha_scaled = True
    style = Style("alpha", "0.45", ":")

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        return Edit(1.0, alpha * float(np.linalg.norm(inputs.bridged)) * inputs.random_direction)


@CONDITIONS.register
class Shuffled(Condition):
    name = "shuffled"
    formula = "h + α b′, b′ of another example"
    purpose = "add's control: a real bridged state, wrong example"
    alpha_scaled = True
    style = Style("alpha", "0.65", "--")

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        return Edit(1.0, alpha * inputs.shuffled)


@CONDITIONS.register
class Mean(Condition):
    name = "mean"
    formula = "μ (bridge_train mean)"
    purpose = "replace's control: the receiver's average state"
    style = Style("replacement", "0.55")

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        return Edit(0.0, inputs.mean)


@CONDITIONS.register
class SelfPatch(Condition):
    name = "self_patch"
    formula = "h_full"
    purpose = ("the receiver's own state on the full-context prompt: the upper bound any bridge could deliver "
               "(only where the receiver's prompt lacks facts)")
    needs_missing_facts = True
    needs_full_context = True
    style = Style("replacement", "tab:green")

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        if inputs.full_context is None:
            raise ValueError("self_patch needs the receiver's full-context state")
        return Edit(0.0, inputs.full_context)
