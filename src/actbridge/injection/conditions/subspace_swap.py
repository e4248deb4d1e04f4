"""``subspace_swap``: swap only the part of h that lies in the bridge's output subspace.

The distributed-alignment-search style of intervention: with ``U`` [d, k] the top-k principal
directions of the bridge's predictions on bridge_train (the rows its fit was trained on, centred),
``h' = h - U U^T h + U U^T b``. The rest of the receiver's state is kept, so a bridge that is right
about a few directions and wrong about the others is tested on the few. k = d is ``replace``;
k = 0 is ``none``.
"""

from __future__ import annotations

import numpy as np

from actbridge.injection.conditions import CONDITIONS, Condition, ConditionInputs, Edit, InjectionContext, Style


def principal_directions(predictions: np.ndarray, k: int) -> np.ndarray:
    """[d, min(k, d)] orthonormal columns: the top principal directions of ``predictions`` [n, d] (centred),
    completed by directions of no variance where the predictions span fewer than k."""
    centred = np.asarray(predictions, dtype=np.float64) - predictions.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return np.ascontiguousarray(vectors[:, ::-1][:, : min(k, vectors.shape[1])])


@CONDITIONS.register
class SubspaceSwap(Condition):
    name = "subspace_swap"
    formula = "h − U Uᵀ h + U Uᵀ b, U: top-k directions of the bridge's outputs"
    purpose = "replace only where the bridge speaks (distributed alignment search)"
    in_default = False
    needs = frozenset({"sender_bridge_train"})
    settings_schema = {"k": {"type": "integer", "minimum": 0, "default": 16,
                             "description": "directions swapped (k >= the receiver's width swaps the whole state)"}}
    style = Style("replacement", "tab:red")

    def __init__(self, bases: dict[str, np.ndarray] | None = None):
        self.bases = bases or {}

    def prepare(self, context: InjectionContext) -> "SubspaceSwap":
        keys, states = context.stores["sender_bridge_train"].read(context.sender_layer, context.role)
        modes = np.asarray([mode for _, mode in keys])
        bases = {}
        for mode, bridge in context.bridges.items():
            rows = np.isin(modes, list(context.fit_modes[mode]))
            if rows.sum() < 2:
                raise ValueError(f"subspace_swap: fewer than two bridge_train rows of {list(context.fit_modes[mode])} "
                                 f"at role {context.role!r} to find the bridge's output directions")
            bases[mode] = principal_directions(bridge.apply(states[rows]), int(context.settings["k"]))
        return SubspaceSwap(bases)

    def edit(self, alpha, inputs: ConditionInputs) -> Edit:
        if inputs.mode not in self.bases:
            raise ValueError(f"subspace_swap has no basis for mode {inputs.mode!r}: bind it to the job first "
                             "(actbridge.injection.conditions.bind)")
        basis = self.bases[inputs.mode]
        return Edit(1.0, basis @ (basis.T @ inputs.bridged), project_out=basis)
