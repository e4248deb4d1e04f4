"""The composition root: every registry, gathered in one place, and what is built from all of them.

The configuration imports no registry and no library module reads the schema's registry parts: the
workflow, ``actbridge.plan`` and the tests take the complete schema, the docs tables and the item modules
a configured run reads from here. ``python -m actbridge.catalog`` (from the checkout's root) rewrites the
generated tables of config/README.md.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from pathlib import Path
from typing import Mapping

from actbridge import config as configuration
from actbridge.bridges import methods
from actbridge.bridges.methods import BRIDGE_METHODS, offline_method
from actbridge.data.worlds import FORM_KEYS, distractor_form_problem
from actbridge.injection import conditions
from actbridge.injection.conditions import CONDITIONS
from actbridge.kv import conditions as kv_conditions
from actbridge.kv import maps as kv_maps
from actbridge.kv.conditions import KV_CONDITIONS
from actbridge.kv.maps import KV_MAPS

# Each registry's package and the schema part it fills in (actbridge.config.load_schema's extensions).
REGISTRIES = {"actbridge.injection.conditions": (CONDITIONS, conditions.extend_schema),
              "actbridge.bridges.methods": (BRIDGE_METHODS, methods.extend_schema),
              "actbridge.kv.maps": (KV_MAPS, kv_maps.extend_schema),
              "actbridge.kv.conditions": (KV_CONDITIONS, kv_conditions.extend_schema)}


@functools.cache
def _schema() -> dict:
    return configuration.load_schema(extensions=[extend for _, extend in REGISTRIES.values()])


def load_schema() -> dict:
    """The complete config schema: the static file with every registry's part."""
    return copy.deepcopy(_schema())


def validate_config(config: dict) -> dict:
    """:func:`actbridge.config.validate_config` against the complete schema, then what only the library knows."""
    config = configuration.validate_config(config, _schema())
    data = config["data"]
    for key in FORM_KEYS:
        if problem := distractor_form_problem(data[key], data["distractors"], data["hops"], key=f"data.{key}"):
            raise configuration.ConfigError(f"config key {problem}")
    return config


def configured_items(config: Mapping) -> dict[str, list[str]]:
    """Registry package -> the names of its items a validated ``config`` runs: its conditions, and its bridge
    methods with the offline fits they start from."""
    fitted = [*config["bridge"]["methods"], *config["injection"]["methods"]]
    kv = config["kv"]
    return {"actbridge.injection.conditions": list(dict.fromkeys(config["injection"]["conditions"])),
            "actbridge.bridges.methods": list(dict.fromkeys([*fitted, *map(offline_method, fitted)])),
            "actbridge.kv.maps": list(kv["maps"]) if kv["enabled"] else [],
            "actbridge.kv.conditions": list(kv["conditions"]) if kv["enabled"] else []}


def item_files(config: Mapping) -> dict[str, list[Path]]:
    """Registry package -> the module files of the items ``config`` runs (for the rules' code fingerprints:
    an item no rule runs is in no fingerprint)."""
    return {package: sorted({Path(inspect.getfile(REGISTRIES[package][0][name])).resolve() for name in names})
            for package, names in configured_items(config).items()}


def figure_styles(config: Mapping) -> dict[str, dict]:
    """What the figures draw with, for the items ``config`` runs (a figure's ``styles`` name these): the
    conditions of the α sweep and of the replacement bars, each (colour, line style), in registry order, and
    each bridge method's colour."""
    configured = configured_items(config)
    drawn = {figure: {c.name: (c.style.colour, c.style.line) for c in CONDITIONS.values()
                      if c.name in configured["actbridge.injection.conditions"] and c.style.figure == figure}
             for figure in ("alpha", "replacement")}
    return {**drawn, "method_colours": {m.name: m.colour for m in BRIDGE_METHODS.values()
                                        if m.name in configured["actbridge.bridges.methods"]},
            "kv_colours": {c.name: c.colour for c in KV_CONDITIONS.values()
                           if c.name in configured["actbridge.kv.conditions"]}}


DOCS = "config/README.md"
BLOCK = re.compile(r"(<!-- registry: (\S+) -->\n)(.*?)(<!-- end registry -->)", re.DOTALL)


def docs_tables() -> dict[str, str]:
    """The generated tables of the docs, by block name."""
    return {"conditions": conditions.markdown_table(), "bridge_methods": methods.markdown_table(),
            "kv_maps": kv_maps.markdown_table(), "kv_conditions": kv_conditions.markdown_table()}


def with_docs_tables(text: str) -> str:
    """``text`` with each ``<!-- registry: NAME -->`` block replaced by the registry's current table."""
    tables = docs_tables()
    return BLOCK.sub(lambda match: match.group(1) + tables[match.group(2)] + match.group(4), text)


if __name__ == "__main__":
    docs = Path(DOCS)
    docs.write_text(with_docs_tables(docs.read_text()))
