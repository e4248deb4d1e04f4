"""Planted bridges: maps whose answer is known, recovered by each method."""

from __future__ import annotations

import json

import numpy as np
import pytest

from actbridge.models.handle import ModelHandle
from actbridge.activations.store import ActivationStore, ExtractionPlan, extract_activations
from actbridge.bridges.alignment import alignment_metrics, alignment_metrics_by_predictor, identity_predictor, mean_predictor
from actbridge.bridges.jobs import BridgeRun, fit_groups, load_bridges, run_bridge_job
from actbridge.activations.layers import layer_pairs, parse_pair, relative_depth_pairs
from actbridge.bridges.maps import Bridge, Moments, Normalizer, fit_normalizers
from actbridge.bridges.methods import fit_bridge
from actbridge.bridges.solvers import fit_ridge, ridge_path, ridge_weights
from tests.test_activations import tiny_model


def chunked(x, y, size):
    return lambda: iter([(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)])


def planted(n=600, d_s=12, d_r=9, noise=0.05, seed=0, rank=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d_s)) * rng.uniform(0.5, 3, size=d_s) + rng.normal(size=d_s) * 4
    a = rng.normal(size=(d_s, d_r))
    if rank is not None:
        a = rng.normal(size=(d_s, rank)) @ rng.normal(size=(rank, d_r))
    y = x @ a + rng.normal(size=d_r) + noise * rng.normal(size=(n, d_r))
    return x, y, a


def test_closed_form_equals_lstsq():
    x, y, _ = planted()
    weight, bias = ridge_weights(Moments.of(chunked(x, y, 50)()), 0.0)
    design = np.hstack([x, np.ones((len(x), 1))])
    expected = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(weight, expected[:-1], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(bias, expected[-1], rtol=1e-6, atol=1e-9)


def test_every_penalty_of_the_path_equals_a_direct_solve():
    x, y, _ = planted(n=80, d_s=30)  # few rows per input: the penalties matter
    moments = Moments.of(chunked(x, y, 50)())
    cxx, cxy, _ = moments.centered()
    for penalty, weight, bias in ridge_path(moments, (1e-4, 1e-2, 1.0, 10.0)):
        expected = np.linalg.solve(cxx + penalty * moments.n * np.eye(len(cxx)), cxy)
        np.testing.assert_allclose(weight, expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(bias, moments.mean_y - moments.mean_x @ expected, rtol=1e-9, atol=1e-12)


def test_unpenalized_fit_of_rank_deficient_inputs_is_the_minimum_norm_one():
    x, y, _ = planted()
    x = np.hstack([x, x[:, :3], np.zeros((len(x), 2))])  # duplicated and constant inputs: Cxx is singular
    weight, _ = ridge_weights(Moments.of(chunked(x, y, 64)()), 0.0)
    centred_x, centred_y = x - x.mean(axis=0), y - y.mean(axis=0)
    np.testing.assert_allclose(weight, np.linalg.lstsq(centred_x, centred_y, rcond=None)[0], rtol=1e-6, atol=1e-8)


def test_fitting_moments_skip_the_receiver_outer_product_and_fit_the_same():
    x, y, _ = planted()
    full, lean = Moments.of(chunked(x, y, 64)()), Moments.of(chunked(x, y, 64)(), outer_y=False)
    assert lean.yy is None and lean.centered()[2] is None
    assert lean.yy_trace == pytest.approx(np.trace(full.yy), rel=1e-12)
    for penalty in (0.0, 0.1):
        np.testing.assert_array_equal(ridge_weights(lean, penalty)[0], ridge_weights(full, penalty)[0])


def test_streamed_moments_equal_one_shot():
    x, y, _ = planted()
    one = Moments.of(chunked(x, y, len(x))())
    many = Moments.of(chunked(x, y, 7)())
    for name in ("x", "y", "xx", "xy", "yy", "yy_trace"):
        np.testing.assert_allclose(getattr(many, name), getattr(one, name), rtol=1e-12)
    np.testing.assert_allclose(ridge_weights(many, 0.1)[0], ridge_weights(one, 0.1)[0], rtol=1e-10)


def fit(method, x, y, settings=None, seed=0):
    n_train = int(0.8 * len(x))
    train, val = chunked(x[:n_train], y[:n_train], 64), chunked(x[n_train:], y[n_train:], 64)
    sender, receiver = fit_normalizers(train())
    return fit_bridge(method, train, val, sender, receiver, settings={"subsample": 1.0, **(settings or {})}, seed=seed)


def test_ridge_recovers_the_planted_map_in_raw_space():
    x, y, a = planted(noise=0.01)
    bridge = fit("ridge", x, y)
    # W in normalized space = diag-free scalar change of basis of A: compare the raw-space action
    np.testing.assert_allclose(bridge.apply(x[:50]), y[:50], atol=0.05)
    probe = np.eye(x.shape[1])
    recovered = bridge.apply(probe) - bridge.apply(np.zeros((1, x.shape[1])))
    np.testing.assert_allclose(recovered, a, atol=0.01)
    assert bridge.info["penalty"] <= 1e-3  # little noise: validation picks a small penalty


def test_ridge_penalty_is_picked_on_validation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 40))
    y = x[:, :1] + rng.normal(size=(60, 1)) * 2  # few rows, many useless inputs: shrinkage wins
    train, val = Moments.of(chunked(x[:30], y[:30], 30)()), Moments.of(chunked(x[30:], y[30:], 30)())
    _, _, info = fit_ridge(train, val, (0.0, 0.1, 1.0, 10.0))
    assert info["penalty"] > 0


def test_procrustes_recovers_a_rotation_between_different_widths():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 6))
    rotation = np.linalg.qr(rng.normal(size=(8, 8)))[0][:6]  # [6, 8] orthonormal rows
    y = x @ rotation * 2.5
    bridge = fit("procrustes", x, y)
    np.testing.assert_allclose(bridge.apply(x), y, atol=1e-6)


def test_lowrank_recovers_a_low_rank_map():
    x, y, a = planted(rank=3, noise=0.01)
    bridge = fit("lowrank", x, y, dict(subsample=1.0, rank=3))
    assert np.linalg.matrix_rank(bridge.weight, tol=1e-6) == 3
    assert np.abs(bridge.apply(x) - y).max() < 0.2


@pytest.mark.parametrize("method", ["sgd", "mlp"])
def test_iterative_methods_learn_a_linear_map(method):
    x, y, _ = planted(n=800, noise=0.01)
    settings = dict(subsample=1.0, sgd=dict(epochs=300, learning_rate=1e-2),
                              mlp=dict(epochs=300, learning_rate=3e-3))
    bridge = fit(method, x, y, settings)
    score = alignment_metrics(bridge.map_normalized, chunked(x, y, 100), bridge.sender, bridge.receiver)
    assert score["r2"] > 0.98


def test_cosine_loss_sgd_aligns_directions():
    x, y, _ = planted(n=800, noise=0.01)
    settings = dict(subsample=1.0, sgd=dict(loss="cosine", epochs=200, learning_rate=1e-2))
    bridge = fit("sgd", x, y, settings)
    score = alignment_metrics(bridge.map_normalized, chunked(x, y, 100), bridge.sender, bridge.receiver)
    assert score["cos_normalized"] > 0.99


def test_seeds_change_the_subsample():
    x, y, _ = planted(noise=0.5)
    a = fit("ridge", x, y, {"subsample": 0.7}, seed=0)
    b = fit("ridge", x, y, {"subsample": 0.7}, seed=1)
    assert a.info["train_rows"] != b.info["train_rows"] or not np.allclose(a.weight, b.weight)
    again = fit("ridge", x, y, {"subsample": 0.7}, seed=0)
    np.testing.assert_array_equal(a.weight, again.weight)


@pytest.mark.parametrize("method", ["ridge", "mlp"])
def test_save_load_round_trip(tmp_path, method):
    x, y, _ = planted(n=200)
    settings = dict(subsample=1.0, mlp=dict(epochs=5))
    bridge = fit(method, x, y, settings)
    bridge.save(tmp_path / "b", {"what": "test"})
    loaded = Bridge.load(tmp_path / "b")
    np.testing.assert_allclose(loaded.apply(x[:20]), bridge.apply(x[:20]), rtol=1e-4, atol=1e-4)


def test_baselines_score_as_expected():
    x, y, _ = planted(noise=0.0, d_r=12)
    sender, receiver = fit_normalizers(chunked(x, y, 100)())
    mean = alignment_metrics(mean_predictor(12), chunked(x, y, 100), sender, receiver)
    assert np.isnan(mean["cos_normalized"]) and abs(mean["r2"]) < 1e-9 and np.isnan(mean["cka"])
    same = Normalizer(receiver.mean, receiver.scale)
    perfect = alignment_metrics(identity_predictor, chunked(y, y, 100), same, receiver)
    assert perfect["cos_normalized"] == pytest.approx(1.0) and perfect["r2"] == pytest.approx(1.0)
    assert perfect["cka"] == pytest.approx(1.0) and perfect["mse"] == pytest.approx(0.0, abs=1e-20)


def test_pairs():
    assert relative_depth_pairs(range(0, 13), 12, 24)[:3] == [(0, 0), (1, 2), (2, 4)]
    assert relative_depth_pairs([6], 6, 6) == [(6, 6)]
    assert parse_pair("s3-r10") == (3, 10)
    with pytest.raises(ValueError, match="s<sender layer>"):
        parse_pair("3-10")
    assert layer_pairs("grid", [0, 1], [2, 3], n_sender=1, n_receiver=3) == [(0, 2), (0, 3), (1, 2), (1, 3)]
    assert layer_pairs([[1, 3], [1, 3]], [0, 1], [2, 3], n_sender=1, n_receiver=3) == [(1, 3)]
    with pytest.raises(ValueError, match="bridge.pairs.*activations.layers"):
        layer_pairs("relative_depth", [0, 1], [2, 3], n_sender=1, n_receiver=3)


@pytest.fixture(scope="module")
def self_bridge_stores(tmp_path_factory, tokenizer):
    """One model on both sides, extracted as the workflow extracts: the sender on its own prompt (without the
    second-hop facts in asymmetric mode), the receiver on the full one."""
    from actbridge.data.worlds import DataConfig, build_split

    root = tmp_path_factory.mktemp("self_bridge")
    model = tiny_model(tokenizer, layers=2, hidden=32)
    config = DataConfig(seed=5, hops=(1, 2), distractors=2,
                        sizes={"lm_train": 10, "bridge_train": 120, "bridge_val": 40, "eval": 60})
    stores = {"sender": {}, "receiver": {}}
    for split in ("bridge_train", "bridge_val", "eval"):
        table = build_split(config, split)
        for side, prompt in (("sender", "sender"), ("receiver", "full")):
            plan = ExtractionPlan(layers=(1, 2), roles=("last", "bridge"), prompt=prompt, shard_rows=50)
            extract_activations(ModelHandle.of(model, tokenizer), table, plan=plan, out_dir=root / side / split,
                                identity={"kind": "test"})
            stores[side][split] = ActivationStore(root / side / split)
    return stores


MODES = ("shared", "asymmetric", "relay")


def test_bridge_from_a_model_to_itself_is_the_identity(tmp_path, self_bridge_stores):
    """Planted: the same model on both sides; the per-mode ridge fit must recover the identity on held-out
    shared and relay states, although the asymmetric rows (a sender without the second-hop facts) are not."""
    groups = fit_groups("per_mode", MODES, ())
    metrics = run_bridge_job(self_bridge_stores, BridgeRun(1, 1, "ridge", 0), roles=("last", "bridge"), groups=groups,
                             settings={"ridge_penalties": [0.0, 1e-3, 1e-1]}, out_dir=tmp_path / "out",
                             provenance={"test": True})
    rows = metrics.to_pylist()
    bridge_rows = [r for r in rows if r["predictor"] == "bridge"]
    # a relay prompt has no bridge mention: that role has no relay rows, the last token does
    assert {(r["role"], r["mode"], r["fit"]) for r in bridge_rows} == {
        (role, mode, mode) for role in ("last", "bridge") for mode in ("shared", "asymmetric")} | {
        ("last", "relay", "shared")}
    same_prompt = [r for r in bridge_rows if r["mode"] in ("shared", "relay")]
    assert all(r["cos_normalized"] >= 0.999 and r["r2"] >= 0.998 for r in same_prompt)
    assert all(r["cos_normalized"] >= 0.999 for r in rows if r["predictor"] == "identity" and r["mode"] != "asymmetric")
    assert all(r["r2"] < 0.5 for r in rows if r["predictor"] == "shuffled")
    bridges = load_bridges(tmp_path / "out" / "last")
    assert set(bridges) == set(MODES) and bridges["relay"] is bridges["shared"]
    np.testing.assert_allclose(bridges["shared"].weight, np.eye(32), atol=0.05)
    assert json.loads((tmp_path / "out" / "bridge" / "fits.json").read_text()) == {
        "shared": "shared", "relay": "shared", "asymmetric": "asymmetric"}


def test_a_pooled_fit_moves_the_shared_map_off_the_identity(tmp_path, self_bridge_stores):
    """The reason fits are per mode: pooling shared rows (the identity) with asymmetric rows (a different
    regression) makes a map that no longer reproduces the shared states exactly."""
    settings = {"ridge_penalties": [0.0, 1e-3, 1e-1]}
    scores = {}
    for strategy in ("per_mode", "pooled"):
        metrics = run_bridge_job(self_bridge_stores, BridgeRun(1, 1, "ridge", 0), roles=("last",),
                                 groups=fit_groups(strategy, MODES, ("shared", "asymmetric")), settings=settings,
                                 out_dir=tmp_path / strategy, provenance={})
        scores[strategy] = {r["mode"]: r["r2"] for r in metrics.to_pylist() if r["predictor"] == "bridge"}
    # (this random-init model barely reads the facts it lacks, so the gap is small here; 0.96-0.98 against 0.999
    # normalized cosine on the shipped receiver)
    assert scores["pooled"]["shared"] < scores["per_mode"]["shared"] - 1e-4
    assert set(load_bridges(tmp_path / "pooled" / "last")) == set(MODES)


def test_fit_groups_serve_every_context_mode_once():
    def plan(groups):
        return [(g.name, g.train_modes, g.serves) for g in groups]

    assert plan(fit_groups("per_mode", MODES, ())) == [("shared", ("shared",), ("shared", "relay")),
                                                       ("asymmetric", ("asymmetric",), ("asymmetric",))]
    # the trained bridge reads the receiver's own prompt, which relay changes: relay trains on its own rows
    assert plan(fit_groups("per_mode", MODES, (), through_receiver=True)) == [
        ("shared", ("shared",), ("shared",)), ("asymmetric", ("asymmetric",), ("asymmetric",)),
        ("relay", ("relay",), ("relay",))]
    # without shared rows, relay rows fit themselves
    assert plan(fit_groups("per_mode", ("asymmetric", "relay"), ())) == [
        ("asymmetric", ("asymmetric",), ("asymmetric",)), ("relay", ("relay",), ("relay",))]
    assert plan(fit_groups("pooled", MODES, ("shared", "asymmetric"))) == [
        ("pooled", ("shared", "asymmetric"), MODES)]
    with pytest.raises(ValueError, match="bridge.fit"):
        fit_groups("by_hop", MODES, ())


@pytest.mark.parametrize("method", ["ridge", "sgd", "procrustes", "lowrank", "mlp"])
def test_a_constant_sender_state_bridges_to_the_receivers_mean(method):
    """Planted: the embedding of a fixed last token is the same for every example. It carries nothing
    example-specific, so every method must fit without error and predict the receiver's mean."""
    x, y, _ = planted(n=300)
    constant = np.tile(np.random.default_rng(1).normal(size=(1, x.shape[1])) * 3, (len(x), 1))
    bridge = fit(method, constant, y, dict(subsample=1.0, rank=3,
                                                      sgd=dict(epochs=30), mlp=dict(epochs=30)))
    np.testing.assert_allclose(bridge.apply(constant[:5]), np.tile(y[:240].mean(0), (5, 1)), atol=0.05 * np.abs(y).max())


def test_alignment_of_a_constant_target_is_undefined_not_an_error():
    """Both sides constant (layer 0 at a prompt's fixed last token, in both models): R² has no variance to
    explain, so it is NaN; the mean baseline still scores (zero error) and nothing raises."""
    x, _, _ = planted(n=100)
    constant_x = np.tile(x[:1], (len(x), 1))
    constant_y = np.tile(np.arange(9.0)[None, :], (len(x), 1))
    sender, receiver = fit_normalizers(chunked(constant_x, constant_y, 25)())
    metrics = alignment_metrics(mean_predictor(9), chunked(constant_x, constant_y, 25), sender, receiver)
    assert metrics["n"] == 100 and np.isnan(metrics["r2"]) and metrics["mse"] == 0.0


def test_alignment_over_no_rows_scores_nothing():
    """A role a context mode lacks (the bridge mention of a relay prompt) yields no metric rows, not a 0/0."""
    x, y, _ = planted(n=100)
    sender, receiver = fit_normalizers(chunked(x, y, 25)())
    assert alignment_metrics_by_predictor({"mean": mean_predictor(y.shape[1])}, lambda: iter(()), sender,
                                          receiver) == {}


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_is_torch_adam_bit_for_bit(weight_decay):
    """The sgd/mlp bridges' Adam (which spares each job torch.optim's import of torch._dynamo) takes exactly
    torch.optim.Adam's steps: identical parameters after 60 steps of an mlp on random data."""
    import torch

    from actbridge.bridges.solvers import Adam

    def module():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.GELU(), torch.nn.Linear(12, 5)).double()

    ours, theirs = module(), module()
    optimizers = (Adam(ours.parameters(), lr=3e-2, weight_decay=weight_decay),
                  torch.optim.Adam(theirs.parameters(), lr=3e-2, weight_decay=weight_decay))
    generator = torch.Generator().manual_seed(1)
    for _ in range(60):
        x, y = torch.randn(16, 6, generator=generator, dtype=torch.float64), torch.randn(16, 5, generator=generator,
                                                                                     dtype=torch.float64)
        for net, optimizer in zip((ours, theirs), optimizers):
            optimizer.zero_grad()
            ((net(x) - y) ** 2).sum(-1).mean().backward()
            optimizer.step()
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(mine, reference)
    assert not torch.equal(ours[0].weight, module()[0].weight)  # it did move
