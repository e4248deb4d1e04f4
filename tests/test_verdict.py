"""The verdict table on planted statistics: each verdict comes out where it was planted."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from actbridge.schemas import EFFECT_SCHEMA
from actbridge.stats.paired import ACROSS_SEEDS_SCHEMA
from actbridge.stats.verdict import VerdictSettings, verdict_markdown, verdict_table

SETTINGS = VerdictSettings(confidence=0.95)


def across(pair, condition, delta, half_width, p_holm, mode="asymmetric", alpha=None, method="ridge", role="last",
           discordance=0.2, metric="accuracy"):
    return {"pair": pair, "method": method, "role": role, "mode": mode, "family": "vs_none", "condition": condition,
            "alpha": alpha, "reference": "none", "metric": metric, "n_seeds": 5, "n": 200, "delta": delta,
            "seed_sd": 0.01, "t_low": delta - half_width, "t_high": delta + half_width,
            "boot_low": delta - half_width, "boot_high": delta + half_width, "p_value": p_holm, "p_holm": p_holm,
            "boot_se": half_width / 1.96, "discordance": discordance, "holm_rank": 1, "family_size": 4}


def effect(layer, condition, metric, delta, role="last", mode="shared", hops="2"):
    return {"mode": mode, "layer": layer, "role": role, "hops": hops, "condition": condition, "metric": metric, "n": 100,
            "clean_value": 0.5, "value": 0.5 + delta, "delta": delta, "ci_low": delta - 0.05, "ci_high": delta + 0.05,
            "ci_method": "BCa", "test": "mcnemar_exact", "p_value": 0.01, "p_holm": 0.01}


@pytest.fixture()
def planted():
    rows = [
        # the upper bound: self-patching gains 40 points at s2-r3, nothing at s1-r2
        across("s2-r3", "self_patch", 0.40, 0.05, 1e-6), across("s1-r2", "self_patch", 0.02, 0.05, 0.6),
        # replace_rescaled recovers 10 of those 40 points at s2-r3 (and nothing at s1-r2): 25% efficiency
        across("s2-r3", "replace_rescaled", 0.10, 0.04, 1e-3), across("s1-r2", "replace_rescaled", 0.0, 0.04, 1.0),
        # replace harms at one site, does nothing at the other
        across("s2-r3", "replace", -0.20, 0.05, 1e-5), across("s1-r2", "replace", 0.01, 0.04, 0.7),
        # add: a large but not significant Δ is no effect; so is a significant p whose interval crosses 0
        across("s2-r3", "add", 0.08, 0.10, 0.2, alpha=1.0), across("s1-r2", "add", 0.03, 0.05, 0.01, alpha=0.1),
        # shared mode has no upper bound: a gain is reported in points
        across("s2-r3", "replace_rescaled", 0.06, 0.02, 1e-3, mode="shared"),
        # relay mode has its own upper bound: 20 points at s2-r3, of which add_rescaled recovers 15
        across("s2-r3", "self_patch", 0.20, 0.04, 1e-6, mode="relay"),
        across("s2-r3", "add_rescaled", 0.15, 0.04, 1e-4, mode="relay", alpha=1.0),
    ]
    # the sender's profile at layer 2 over all hops, and on its 1-hop questions alone
    sender = [effect(2, "mean", "accuracy", -0.30, hops="all"), effect(2, "mean", "accuracy", -0.90, hops="1"),
              effect(2, "mean", "accuracy", 0.30), effect(1, "mean", "accuracy", -0.01)]
    receiver = [effect(3, "patch", "moved", 0.15), effect(3, "self_patch", "accuracy", 0.40, mode="asymmetric")]
    return (pa.Table.from_pylist(rows, schema=ACROSS_SEEDS_SCHEMA), pa.Table.from_pylist(sender, schema=EFFECT_SCHEMA),
            pa.Table.from_pylist(receiver, schema=EFFECT_SCHEMA))


def test_each_planted_verdict_comes_out(planted):
    table = verdict_table(*planted, settings=SETTINGS)
    rows = {(r["mode"], r["condition"]): r for r in table.to_pylist()}
    helps = rows[("asymmetric", "replace_rescaled")]
    assert helps["verdict"] == "helps: 25% of upper bound" and helps["pair"] == "s2-r3"
    assert helps["channel_efficiency"] == pytest.approx(0.25) and helps["upper_bound"] == pytest.approx(0.40)
    # the sender uses the translated state (layer 2 ablation -30 points); the receiver reads layer 3
    assert helps["sender_ablation"] == pytest.approx(-0.30) and helps["receiver_moved"] == pytest.approx(0.15)
    harmful = rows[("asymmetric", "replace")]
    assert harmful["verdict"] == "harmful" and harmful["delta"] == pytest.approx(-0.20)
    # its interval is ±10 points: only an effect of 16.1 points would be found, more than a quarter of the bound
    nothing = rows[("asymmetric", "add")]
    assert nothing["verdict"] == "inconclusive (could detect only ≥ 16.1 points)"
    assert nothing["pair"] == "s2-r3" and nothing["alpha"] == 1.0 and nothing["threshold"] == pytest.approx(0.10)
    assert rows[("asymmetric", "self_patch")]["verdict"] == "upper bound"
    shared = rows[("shared", "replace_rescaled")]
    assert shared["verdict"] == "helps: +6.0 points" and math.isnan(shared["channel_efficiency"])
    relay = rows[("relay", "add_rescaled")]
    assert relay["verdict"] == "helps: 75% of upper bound" and relay["upper_bound"] == pytest.approx(0.20)
    # the sender- and receiver-side columns come from the shared-mode profiles at the same layers, the sender's
    # from its 1-hop questions: relay rows are those, read in full by the sender
    assert relay["sender_ablation"] == pytest.approx(-0.90) and relay["receiver_moved"] == pytest.approx(0.15)


def test_the_markdown_shows_every_row_by_mode(planted):
    table = verdict_table(*planted, settings=SETTINGS)
    text = verdict_markdown(table, SETTINGS)
    assert text.count("| ridge |") == table.num_rows
    assert "## mode `asymmetric`" in text and "## mode `shared`" in text and "## mode `relay`" in text
    assert "**helps: 25% of upper bound**" in text and "25%" in text


def test_without_causal_effects_the_columns_say_not_available(planted):
    across_seeds, _, _ = planted
    empty = EFFECT_SCHEMA.empty_table()
    table = verdict_table(across_seeds, empty, empty, settings=SETTINGS)
    assert all(math.isnan(r["sender_ablation"]) for r in table.to_pylist())
    assert "n/a" in verdict_markdown(table, SETTINGS)


def test_a_narrow_interval_is_no_effect_and_a_wide_one_inconclusive():
    """The same Δ of 0 reads `no effect` where the test could see 5 points and `inconclusive` where it could not;
    without an upper bound (shared mode) the threshold is stats.detectable_effect."""
    rows = [across("s1-r2", "add", 0.0, 0.01, 1.0, mode="shared", discordance=0.02),
            across("s1-r2", "replace", 0.0, 0.08, 1.0, mode="shared", discordance=0.3)]
    empty = EFFECT_SCHEMA.empty_table()
    table = verdict_table(pa.Table.from_pylist(rows, schema=ACROSS_SEEDS_SCHEMA), empty, empty, settings=SETTINGS)
    verdicts = {r["condition"]: r for r in table.to_pylist()}
    assert verdicts["add"]["verdict"].startswith("no effect (would detect ≥ ")
    assert verdicts["add"]["detectable"] < 0.05 == pytest.approx(verdicts["add"]["threshold"])
    assert verdicts["replace"]["verdict"].startswith("inconclusive (could detect only ≥ ")
    assert verdicts["replace"]["detectable"] > 0.05
    lenient = verdict_table(pa.Table.from_pylist(rows, schema=ACROSS_SEEDS_SCHEMA), empty, empty,
                            settings=VerdictSettings(confidence=0.95, detectable_effect=50))
    assert all(r["verdict"].startswith("no effect") for r in lenient.to_pylist())


def test_the_verdict_rests_on_the_configured_metric(planted):
    """stats.metric: first-token rows decide the verdict, the accuracy rows beside them are not read."""
    across_seeds, sender, receiver = planted
    first = [{**row, "metric": "first_token", "delta": 0.3, "boot_low": 0.25, "boot_high": 0.35, "p_holm": 1e-5}
             for row in across_seeds.to_pylist() if row["condition"] == "add"]
    both = pa.concat_tables([across_seeds, pa.Table.from_pylist(first, schema=ACROSS_SEEDS_SCHEMA)])
    table = verdict_table(both, sender, receiver, settings=VerdictSettings(confidence=0.95, metric="first_token"))
    rows = {(r["mode"], r["condition"]): r for r in table.to_pylist() if r["headline"]}
    assert set(rows) == {("asymmetric", "add")} and rows[("asymmetric", "add")]["metric"] == "first_token"
    assert rows[("asymmetric", "add")]["verdict"].startswith("helps")
    # the headline metric comes first; the accuracy rows beside it keep their own verdicts
    assert table.column("metric").to_pylist()[0] == "first_token"
    accuracy = {(r["mode"], r["condition"]): r for r in table.to_pylist() if r["metric"] == "accuracy"}
    assert accuracy[("asymmetric", "add")]["verdict"].startswith("inconclusive") and not accuracy[("asymmetric", "add")]["headline"]


def test_the_verdict_carries_both_metrics_side_by_side(planted):
    across_seeds, sender, receiver = planted
    first = pa.Table.from_pylist([{**row, "metric": "first_token"} for row in across_seeds.to_pylist()],
                                 schema=ACROSS_SEEDS_SCHEMA)
    table = verdict_table(pa.concat_tables([across_seeds, first]), sender, receiver, settings=SETTINGS)
    by_metric = {m: [r for r in table.to_pylist() if r["metric"] == m] for m in ("accuracy", "first_token")}
    assert len(by_metric["accuracy"]) == len(by_metric["first_token"]) == table.num_rows // 2
    # the same statistics give the same verdicts under either name; only the headline flag differs
    for accuracy, first_token in zip(by_metric["accuracy"], by_metric["first_token"]):
        assert accuracy["verdict"] == first_token["verdict"] and accuracy["headline"] and not first_token["headline"]
    text = verdict_markdown(table, SETTINGS)
    assert "### exact match (headline)" in text and "### first answer token" in text
    assert text.count("| ridge |") == table.num_rows


def site_rows(narrow_half_width: float, wide_half_width: float, *, mode: str = "relay", bound: bool = True):
    """The issue's case: at s0-r0 nothing to restore (no bound) and a flat Δ; at s4-r6 a 40-point bound."""
    rows = [across("s0-r0", "replace", 0.0, 0.01, 1.0, mode=mode, discordance=0.01),
            across("s4-r6", "replace", 0.02, wide_half_width, 0.5, mode=mode, discordance=0.3),
            across("s2-r3", "replace", 0.0, narrow_half_width, 1.0, mode=mode, discordance=0.05),
            across("s0-r0", "self_patch", 0.0, 0.02, 1.0, mode=mode)]
    if bound:
        rows += [across("s4-r6", "self_patch", 0.40, 0.05, 1e-6, mode=mode),
                 across("s2-r3", "self_patch", 0.40, 0.05, 1e-6, mode=mode)]
    empty = EFFECT_SCHEMA.empty_table()
    table = verdict_table(pa.Table.from_pylist(rows, schema=ACROSS_SEEDS_SCHEMA), empty, empty, settings=SETTINGS)
    return {r["condition"]: r for r in table.to_pylist()}["replace"]


def test_no_effect_must_hold_at_every_site_with_a_bound_and_names_the_site_that_limits_it():
    # s0-r0 alone would read `no effect`: it has no bound, so it is not evidence; s4-r6's test is too weak
    weak = site_rows(0.01, 0.12)
    assert weak["verdict"].startswith("inconclusive (could detect only ≥ ") and weak["pair"] == "s4-r6"
    assert weak["threshold"] == pytest.approx(0.10) and weak["upper_bound"] == pytest.approx(0.40)
    # with every bounded site powered, the claim holds, and the row names the site closest to its threshold
    strong = site_rows(0.005, 0.03)
    assert strong["verdict"].startswith("no effect (would detect ≥ ") and strong["pair"] == "s4-r6"
    assert strong["detectable"] <= strong["threshold"] == pytest.approx(0.10)


def test_with_no_bound_at_any_site_a_flat_row_cannot_be_no_effect():
    row = site_rows(0.005, 0.03, bound=False)
    assert row["verdict"] == "inconclusive (no site has an upper bound)" and math.isnan(row["threshold"])
    table = pa.Table.from_pylist([{**row, "metric": "accuracy"}], schema=verdict_table(
        ACROSS_SEEDS_SCHEMA.empty_table(), EFFECT_SCHEMA.empty_table(), EFFECT_SCHEMA.empty_table(),
        settings=SETTINGS).schema)
    assert "(no bound)" in verdict_markdown(table, SETTINGS)


def test_without_a_bound_every_site_counts_against_the_points_threshold():
    """Shared mode: one narrow site does not make `no effect` while another site's test is weak."""
    row = site_rows(0.005, 0.12, mode="shared")
    assert row["verdict"].startswith("inconclusive") and row["pair"] == "s4-r6"
    assert row["threshold"] == pytest.approx(SETTINGS.detectable_effect / 100)


def test_the_verdict_figure_draws_every_row_with_its_band(planted, tmp_path):
    from actbridge.report.plots import save_figure, verdict_figure, verdict_kind

    table = verdict_table(*planted, settings=SETTINGS)
    figure = verdict_figure(table)
    labels = [label.get_text() for axis in figure.axes for label in axis.get_yticklabels()]
    assert len(labels) == table.num_rows
    assert {verdict_kind(v) for v in table.column("verdict").to_pylist()} >= {"helps", "harmful", "inconclusive"}
    save_figure(figure, tmp_path / "v.pdf", tmp_path / "v.png")
    assert (tmp_path / "v.pdf").read_bytes().startswith(b"%PDF")
    verdict_figure(table.schema.empty_table())  # no rows: one panel that says so
