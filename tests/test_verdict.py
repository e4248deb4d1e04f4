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
    rows = {(r["mode"], r["condition"]): r for r in table.to_pylist()}
    assert set(rows) == {("asymmetric", "add")} and rows[("asymmetric", "add")]["metric"] == "first_token"
    assert rows[("asymmetric", "add")]["verdict"].startswith("helps")


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
