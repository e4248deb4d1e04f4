"""orthogonal_add, the condition that sees h: planted geometry, and the transform hook through both engines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actbridge.injection.conditions import CONDITIONS, ConditionInputs, Edit, condition_labels
from actbridge.injection.jobs import build_edits, relative_perturbation
from actbridge.models.edited_scoring import Edits, edited_states, fast_scores, naive_scores
from tests.test_activations import tiny_model
from tests.test_interventions import assert_same, examples_for

D = 32


def inputs(bridged: np.ndarray) -> ConditionInputs:
    return ConditionInputs(bridged, np.zeros(D), np.eye(D)[0], np.zeros(D), None, "shared")


def edits_of(bridged: np.ndarray, alpha: float = 1.0) -> Edits:
    return build_edits(condition_labels(["none", "add", "orthogonal_add"], [alpha]), inputs(bridged))


def test_it_adds_what_is_across_h_and_nothing_along_it():
    rng = np.random.default_rng(0)
    h = rng.normal(size=D)
    across = rng.normal(size=D)
    across -= (across @ h) / (h @ h) * h
    state = torch.from_numpy(h)
    # b along h: nothing to add; b across h: all of it (as add); any b: the change is orthogonal to h
    np.testing.assert_allclose(edited_states(state, edits_of(3.0 * h))[2].numpy(), h, atol=1e-5)
    np.testing.assert_allclose(edited_states(state, edits_of(across, 0.5))[2].numpy(), h + 0.5 * across, atol=1e-5)
    b = rng.normal(size=D) * 4
    changed = edited_states(state, edits_of(b, 2.0)).numpy()
    assert abs((changed[2] - h) @ h) < 1e-4 * np.linalg.norm(h) ** 2
    np.testing.assert_allclose(changed[1], h + 2.0 * b, atol=1e-5)  # add, beside it, is the linear edit
    expected = 2.0 * np.linalg.norm(b - (b @ h) / (h @ h) * h) / np.linalg.norm(h)
    np.testing.assert_allclose(relative_perturbation(h, edits_of(b, 2.0))[2], expected, rtol=1e-6)


def test_the_transform_equals_its_edit_computed_from_the_recorded_state_through_both_engines(tokenizer, eval_table):
    """The hook against the linear edit it should amount to: with the clean states the engine recorded, the
    orthogonal part of each b is computed outside and injected by ``add``; the scores agree, fast and naive."""
    model = tiny_model(tokenizer, layers=2, hidden=D)
    examples = examples_for(tokenizer, eval_table, n=4, role="middle")
    rng = np.random.default_rng(1)
    bridged = [rng.normal(size=D) * 2 for _ in examples]
    labels = condition_labels(["none", "orthogonal_add"], [1.5])
    edits = [build_edits(labels, inputs(b)) for b in bridged]
    fast = fast_scores(model, examples, 1, edits)
    assert_same(fast, naive_scores(model, examples, 1, edits))
    outside = []
    for b, scores in zip(bridged, fast):
        h = scores.clean_state.astype(np.float64)
        across = 1.5 * (b - (b @ h) / (h @ h) * h)
        outside.append(build_edits(condition_labels(["none", "add"], [1.0]), inputs(across)))
    for ours, reference in zip(fast, fast_scores(model, examples, 1, outside)):
        np.testing.assert_allclose(ours.logprob, reference.logprob, atol=1e-4, rtol=0)
        assert not np.allclose(ours.logprob[0], ours.logprob[1], atol=1e-3)  # the edit does something


def test_edits_may_each_remove_their_own_subspace_and_mix_with_transforms():
    """A condition that builds its basis per call (two different bases in one example) and a transform
    in the same example: each edit gets its own."""
    rng = np.random.default_rng(2)
    h = rng.normal(size=D)
    first, second = np.eye(D)[:, :2], np.eye(D)[:, 5:8]
    parts = {"one": Edit(1.0, np.zeros(D), project_out=first.copy()),
             "two": Edit(1.0, np.zeros(D), project_out=second.copy())}

    class PerCall:
        def __init__(self, name):
            self.name = name

        def edit(self, alpha, inputs):
            return parts[self.name]

    bound = {"one": PerCall("one"), "two": PerCall("two"), "orthogonal_add": CONDITIONS["orthogonal_add"]()}
    edits = build_edits([("one", None), ("two", None), ("orthogonal_add", 1.0)], inputs(np.ones(D)), bound)
    changed = edited_states(torch.from_numpy(h), edits).numpy()
    np.testing.assert_allclose(changed[0], h - first @ (first.T @ h), atol=1e-6)
    np.testing.assert_allclose(changed[1], h - second @ (second.T @ h), atol=1e-6)
    np.testing.assert_allclose(changed[2] - h, np.ones(D) - (np.ones(D) @ h) / (h @ h) * h, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_transform_runs_in_float32_on_low_precision_states(dtype):
    h = torch.randn(4, 1, D, generator=torch.Generator().manual_seed(3)).to(dtype)
    b = np.random.default_rng(4).normal(size=D)
    edits = edits_of(b)
    out = edited_states(h[0, 0], edits)
    assert out.dtype == dtype
    across = (out[2].float() - h[0, 0].float())
    assert abs(float(across @ h[0, 0].float())) < 0.05 * float(h[0, 0].float().norm()) * float(across.norm())
