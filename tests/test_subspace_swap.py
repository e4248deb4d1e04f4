"""subspace_swap: planted cases. k = d swaps the whole state (= replace), k = 0 swaps nothing (= none)."""

from __future__ import annotations

import numpy as np
import pytest

from actbridge.injection.jobs import build_edits
from actbridge.injection.conditions import (CONDITIONS, ConditionInputs, InjectionContext, bind, condition_labels)
from actbridge.injection.conditions.subspace_swap import principal_directions
from actbridge.models.edited_scoring import fast_scores, naive_scores
from tests.test_activations import tiny_model
from tests.test_interventions import assert_same, examples_for

D = 32


class PlantedStore:
    """Stored sender states at every (layer, role): ``read`` as ActivationStore's."""

    def __init__(self, keys, states):
        self.keys, self.states = keys, states

    def read(self, layer, role):
        return self.keys, self.states


class LinearBridge:
    def __init__(self, weight):
        self.weight = weight

    def apply(self, sender_raw):
        return sender_raw @ self.weight


def context(k, weight, rng, n=60):
    keys = [(f"e{i}", "shared" if i % 2 else "asymmetric") for i in range(n)]
    bridge = LinearBridge(weight)
    return InjectionContext("last", 1, 1, {"shared": bridge, "asymmetric": bridge},
                            {"shared": ("shared",), "asymmetric": ("asymmetric",)}, {"k": k},
                            {"sender_bridge_train": PlantedStore(keys, rng.normal(size=(n, weight.shape[0])))})


def test_the_basis_spans_the_bridge_outputs():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 3)) @ rng.normal(size=(3, D))  # outputs in a 3-dimensional subspace
    bound = CONDITIONS["subspace_swap"]().prepare(context(3, weight, rng))
    for basis in bound.bases.values():
        assert basis.shape == (D, 3)
        np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-10)
        # every row of the bridge's output space lies in the span: projecting it keeps it whole
        outputs = rng.normal(size=(5, 8)) @ weight
        np.testing.assert_allclose(outputs @ basis @ basis.T, outputs, atol=1e-8)


def test_principal_directions_clip_k_and_complete_a_short_span():
    rng = np.random.default_rng(1)
    predictions = rng.normal(size=(4, 2)) @ rng.normal(size=(2, 6))  # rank 2 in 6 dimensions
    full = principal_directions(predictions, 50)
    assert full.shape == (6, 6)
    np.testing.assert_allclose(full @ full.T, np.eye(6), atol=1e-10)
    assert principal_directions(predictions, 0).shape == (6, 0)


def edit_sets(k, rng, examples):
    """none, replace and subspace_swap edits of each example, bound with a k-direction basis."""
    weight = rng.normal(size=(8, D))
    conditions = ["none", "replace", "subspace_swap"]
    bound = bind(conditions, context(k, weight, rng), {"subspace_swap": {"k": k}})
    labels = condition_labels(conditions, [1.0])
    edits = []
    for _ in examples:
        inputs = ConditionInputs(rng.normal(size=D) * 3, rng.normal(size=D), np.eye(D)[0], np.zeros(D), None,
                                 "shared")
        edits.append(build_edits(labels, inputs, bound))
    return edits


@pytest.mark.parametrize("k, equals", [(D, 1), (0, 0)])
def test_k_equal_to_the_width_is_replace_and_k_zero_is_none(tokenizer, eval_table, k, equals):
    model = tiny_model(tokenizer, layers=2, hidden=D)
    examples = examples_for(tokenizer, eval_table, n=3, role="middle")
    rng = np.random.default_rng(2)
    edits = edit_sets(k, rng, examples)
    fast = fast_scores(model, examples, 1, edits)
    assert_same(fast, naive_scores(model, examples, 1, edits))
    for scores in fast:
        # row 2 is subspace_swap; row `equals` is replace (k = d) or none (k = 0)
        np.testing.assert_allclose(scores.logprob[2], scores.logprob[equals], atol=1e-4, rtol=0)
        np.testing.assert_array_equal(scores.exact[2], scores.exact[equals])
        assert not np.allclose(scores.logprob[0], scores.logprob[1], atol=1e-3)  # the two references differ


def test_it_is_off_by_default_and_its_key_is_in_the_schema():
    from actbridge.catalog import load_schema

    assert "subspace_swap" not in CONDITIONS.names(lambda c: c.in_default)
    injection = load_schema()["properties"]["injection"]["properties"]
    assert "subspace_swap" in injection["conditions"]["items"]["enum"]
    assert injection["subspace_swap"]["properties"]["k"]["default"] == 16
