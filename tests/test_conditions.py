"""Each condition's edit produces the state its definition names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actbridge.injection.jobs import build_edits
from actbridge.injection.conditions import CONDITIONS, ConditionInputs, condition_labels
from actbridge.injection.controls import derangement, random_directions
from actbridge.models.edited_scoring import apply_edits


@pytest.fixture()
def inputs():
    rng = np.random.default_rng(0)
    d = 16
    return ConditionInputs(bridged=rng.normal(size=d) * 3, shuffled=rng.normal(size=d),
                           random_direction=random_directions(1, d, 5)[0], mean=rng.normal(size=d),
                           full_context=rng.normal(size=d))


def edited(h, labels, inputs):
    edits = build_edits(labels, inputs)
    hidden = torch.from_numpy(np.tile(h, (len(labels), 1, 1))).float()  # [K, 1, d]
    out = apply_edits(hidden, torch.arange(len(labels)), torch.zeros(len(labels), dtype=torch.long), edits.keep,
                      edits.vector, edits.norm_scaled)
    return out[:, 0].numpy()


def test_every_condition_matches_its_definition(inputs):
    rng = np.random.default_rng(1)
    h = rng.normal(size=16) * 5
    b = inputs.bridged
    a = 0.3
    labels = [("none", None), ("add", a), ("add_rescaled", a), ("replace", None), ("replace_rescaled", None),
              ("interpolate", a), ("random", a), ("shuffled", a), ("mean", None), ("self_patch", None)]
    got = dict(zip(labels, edited(h, labels, inputs)))
    hn, bn = np.linalg.norm(h), np.linalg.norm(b)
    expected = {
        ("none", None): h,
        ("add", a): h + a * b,
        ("add_rescaled", a): h + a * hn / bn * b,
        ("replace", None): b,
        ("replace_rescaled", None): hn / bn * b,
        ("interpolate", a): (1 - a) * h + a * b,
        ("shuffled", a): h + a * inputs.shuffled,
        ("mean", None): inputs.mean,
        ("self_patch", None): inputs.full_context,
    }
    for label, value in expected.items():
        np.testing.assert_allclose(got[label], value, rtol=1e-5, atol=1e-5, err_msg=str(label))
    random_part = got[("random", a)] - h
    assert np.linalg.norm(random_part) == pytest.approx(a * bn, rel=1e-5)
    assert abs(np.dot(random_part, b)) / (np.linalg.norm(random_part) * bn) < 0.9
    assert np.linalg.norm(got[("replace_rescaled", None)]) == pytest.approx(hn, rel=1e-5)


def test_labels_expand_alphas_only_where_they_apply():
    labels = condition_labels(["none", "add", "replace"], [0.1, 1.0])
    assert labels == [("none", None), ("add", 0.1), ("add", 1.0), ("replace", None)]
    with pytest.raises(ValueError, match="allowed"):
        condition_labels(["boost"], [1.0])
    assert set(CONDITIONS) >= {"self_patch", "mean", "random", "shuffled"}


def test_derangement_and_random_directions():
    permutation = derangement(50, 3)
    assert sorted(permutation) == list(range(50)) and not np.any(permutation == np.arange(50))
    directions = random_directions(100, 8, 1)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    np.testing.assert_array_equal(directions, random_directions(100, 8, 1))
