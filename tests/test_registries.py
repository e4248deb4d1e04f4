"""Drift tests: everything built from the registries agrees with them, and nothing lists them by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from actbridge.bridges.methods import BRIDGE_METHODS, default_methods
from actbridge.catalog import DOCS, figure_styles, item_files, load_schema, validate_config, with_docs_tables
from actbridge.config import SCHEMA_PATH, ConfigError
from actbridge.fingerprint import import_closure
from actbridge.injection.conditions import CONDITIONS, default_conditions, rescaled_twins

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_tables_are_the_registries():
    text = (ROOT / DOCS).read_text()
    assert "<!-- registry: conditions -->" in text and "<!-- registry: bridge_methods -->" in text
    assert with_docs_tables(text) == text, "stale tables in config/README.md: run `python -m actbridge.catalog`"


def test_every_enum_that_names_an_item_is_the_registry():
    schema = load_schema()["properties"]
    injection, bridge = schema["injection"]["properties"], schema["bridge"]["properties"]
    assert injection["conditions"]["items"]["enum"] == list(CONDITIONS.names())
    assert injection["conditions"]["default"] == default_conditions()
    for enum in (bridge["methods"]["items"]["enum"], injection["methods"]["items"]["enum"],
                 schema["figures"]["properties"]["method"]["enum"]):
        assert enum == list(BRIDGE_METHODS.names())
    assert bridge["methods"]["default"] == default_methods()
    raw = yaml.safe_load(SCHEMA_PATH.read_text())
    assert not re.search(r"\b(add_rescaled|procrustes)\b", yaml.safe_dump(raw)), "the schema file lists items by hand"


def test_the_defaults_keep_the_reference_order():
    assert default_conditions() == ["none", "add", "add_rescaled", "replace", "replace_rescaled", "interpolate",
                                    "random", "shuffled", "mean", "self_patch"]
    assert default_methods() == ["ridge", "sgd", "procrustes", "lowrank", "mlp"]


def test_each_item_is_complete():
    for condition in CONDITIONS.values():
        assert condition.formula and condition.purpose, condition.name
        assert condition.rescaled_twin in (None, *CONDITIONS.names())
        assert condition.style.figure in (None, "alpha", "replacement")
        assert not condition.alpha_scaled or condition.style.figure != "replacement", condition.name
    assert rescaled_twins() == {"add_rescaled": "add", "replace_rescaled": "replace"}
    for method in BRIDGE_METHODS.values():
        assert method.summary, method.name
        assert not method.through_receiver or method.start in BRIDGE_METHODS
        assert set(method.settings_schema) <= set(method.keys), method.name


@pytest.mark.parametrize("key, value, message", [
    ("conditions", ["none", "boost"], "injection.conditions[1]"),
    ("subspace_swap", {"k": -1}, "injection.subspace_swap.k"),
    ("subspace_swap", {"width": 3}, "injection.subspace_swap.width"),
])
def test_an_unknown_item_or_a_bad_item_key_is_a_config_error_naming_it(key, value, message):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["injection"] = {key: value}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config)


def test_every_rule_fingerprints_its_own_script():
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        for body in re.split(r"(?m)^[ \t]*(?=(?:rule|checkpoint)[ :])", path.read_text())[1:]:
            script = re.search(r'script:\n\s+"\.\./scripts/(\w+)\.py"', body)
            code = re.search(r'code=script_code\("(\w+)"\)', body)
            assert script and code and script.group(1) == code.group(1), body.splitlines()[0]


def test_the_closure_follows_configured_items_and_function_level_imports():
    package = ROOT / "src" / "actbridge"
    script = ROOT / "workflow" / "scripts" / "inject.py"

    def closure(**items):
        return {p.relative_to(package).as_posix() for p in import_closure(script, items=items or None)}

    # without a configuration: every item module (found by import_all, named by no import statement)
    assert {"injection/conditions/standard.py", "injection/conditions/subspace_swap.py",
            "models/edited_scoring.py", "bridges/methods/cca.py", "bridges/maps.py"} <= closure()
    # with one: the configured items only, and what they import
    configured = item_files(validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text())))
    chosen = closure(**configured)
    assert {"injection/conditions/standard.py", "bridges/methods/closed_form.py", "bridges/solvers.py"} <= chosen
    assert not {"injection/conditions/subspace_swap.py", "bridges/methods/cca.py"} & chosen
    split = {p.relative_to(package).as_posix() for p in import_closure(ROOT / "workflow" / "scripts" / "dataset_split.py")}
    assert "models/edited_scoring.py" not in split and "data/worlds.py" in split


def test_the_extension_examples_in_the_docs_are_one_file_each_and_work(tmp_path):
    """docs/extending.md's condition and bridge method, each dropped in as one file, reach the registry, the
    schema and the fit, with nothing else touched."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "workflow" / "schemas", tmp_path / "workflow" / "schemas")
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "extending.md").read_text(), re.S)
    assert len(blocks) == 2
    for block in blocks:
        (tmp_path / block.splitlines()[0].lstrip("# ").strip()).write_text(block)
    check = (
        "import numpy as np\n"
        "from actbridge.catalog import load_schema\n"
        "from actbridge.bridges.maps import fit_normalizers\n"
        "from actbridge.bridges.methods import fit_bridge\n"
        "from actbridge.injection.conditions import CONDITIONS, ConditionInputs\n"
        "schema = load_schema()['properties']\n"
        "assert 'half_replace' in schema['injection']['properties']['conditions']['items']['enum']\n"
        "assert 'mean_shift' in schema['bridge']['properties']['methods']['items']['enum']\n"
        "edit = CONDITIONS['half_replace']().edit(None, ConditionInputs(*[np.ones(3)] * 4, None))\n"
        "assert edit.keep == 0.5 and np.allclose(edit.vector, 0.5)\n"
        "x = np.random.default_rng(0).normal(size=(50, 4)); y = np.random.default_rng(1).normal(size=(50, 3))\n"
        "rows = lambda: iter([(x, y)])\n"
        "bridge = fit_bridge('mean_shift', rows, rows, *fit_normalizers(rows()),\n"
        "                    settings={'subsample': 1.0}, seed=0)\n"
        "assert np.allclose(bridge.apply(x[:2]), y.mean(axis=0))\n")
    subprocess.run([sys.executable, "-c", check], cwd=tmp_path, check=True, env={"PYTHONPATH": str(tmp_path / "src")})


def test_every_figure_is_one_spec_with_its_builder_and_caption():
    """The figure rules, their captions, ``plan`` and the tests read :data:`actbridge.report.FIGURES`: each
    spec names a builder that takes exactly its tables and keywords, and a caption that exists; no caption
    file is left without its figure."""
    import inspect

    from actbridge.report import FIGURES, plots

    captions = ROOT / "workflow" / "report"
    for spec in FIGURES.values():
        builder = getattr(plots, spec.builder)
        required = {name for name, parameter in inspect.signature(builder).parameters.items()
                    if parameter.default is inspect.Parameter.empty}
        assert required <= {*spec.inputs, *spec.params, *spec.fixed, *spec.styles} <= set(
            inspect.signature(builder).parameters)
        assert set(spec.styles.values()) <= set(figure_styles(validate_config(yaml.safe_load(
            (ROOT / "config" / "config.yaml").read_text()))))
        assert (captions / spec.caption).is_file(), spec.caption
    assert {path.name for path in captions.glob("figure_*.rst")} == {spec.caption for spec in FIGURES.values()}
    assert "figure_" not in (ROOT / "workflow" / "Snakefile").read_text(), "figure rules mark themselves local"


def test_every_method_fits_on_its_declared_keys_alone():
    """Each registered method (a dropped-in one too) fits a planted relation seeing only the keys it declares:
    reading any other raises, so an undeclared key fails here instead of falling back to a default."""
    import numpy as np

    from actbridge.bridges.maps import fit_normalizers
    from actbridge.bridges.methods import fit_bridge

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    y = x @ rng.normal(size=(5, 4)) + 0.01 * rng.normal(size=(120, 4))
    rows = lambda: iter([(x[:60], y[:60]), (x[60:], y[60:])])  # noqa: E731
    quick = {"sgd": {"epochs": 3}, "mlp": {"epochs": 3}}
    for method in BRIDGE_METHODS.values():
        if method.through_receiver:  # trained through the receiver: tests/test_trained.py
            continue
        bridge = fit_bridge(method.name, rows, rows, *fit_normalizers(rows()), settings=quick, seed=0)
        assert bridge.apply(x[:3]).shape == (3, 4), method.name


def test_an_undeclared_key_raises_and_get_is_no_way_around_it():
    from actbridge.registry import UndeclaredKey

    keys = BRIDGE_METHODS["ridge"].settings({"subsample": 0.5, "rank": 3})
    assert dict(keys) == {"subsample": 0.5, "ridge_penalties": keys["ridge_penalties"]}
    for read in (lambda: keys["rank"], lambda: keys.get("rank", 8)):
        with pytest.raises(UndeclaredKey, match="bridge method ridge read bridge.rank"):
            read()
    with pytest.raises(ConfigError, match="bridge.sgd.epochs"):
        BRIDGE_METHODS["sgd"].settings({"sgd": {"epochs": 0}})
    with pytest.raises(ConfigError, match="injection.subspace_swap"):
        CONDITIONS["subspace_swap"].settings({"width": 3})
