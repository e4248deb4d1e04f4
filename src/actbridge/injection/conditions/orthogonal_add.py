"""``orthogonal_add``: add only the part of α·b that is orthogonal to the receiver's own state.

``h' = h + α (b − (b·ĥ) ĥ)`` with ``ĥ = h / ‖h‖``. ``add`` moves h partly along itself (a rescaling the
receiver's norms largely undo) and partly across it; this condition keeps only the move across, so an
effect that survives it is not a change of h's norm. It depends on h itself, so it is a batched
transform (:meth:`Condition.transform`), not a linear edit.
"""

from __future__ import annotations

from actbridge.injection.conditions import CONDITIONS, Condition, ConditionInputs, Edit, Style


@CONDITIONS.register
class OrthogonalAdd(Condition):
    name = "orthogonal_add"
    formula = "h + α (b − (b·ĥ) ĥ), ĥ = h/‖h‖"
    purpose = "add without its component along h: an effect beyond rescaling the receiver's state"
    alpha_scaled = True
    in_default = False
    style = Style("alpha", "tab:brown", "-.")

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        return Edit.transformed(self.transform, alpha * inputs.bridged)

    @staticmethod
    def transform(h, source):
        """[m, d] states plus the part of each source [m, d] orthogonal to its state (a zero state: the source
        whole, as there is no direction to remove)."""
        norm = h.norm(dim=-1, keepdim=True)
        unit = h / norm.clamp_min(1e-30)
        return h + source - (source * unit).sum(dim=-1, keepdim=True) * unit
