"""The package's structure, read from its imports: no cycle among the modules, and no import from a lower
stage to a higher one. The stages, lowest first, are written once here and in docs/extending.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "actbridge"

# Lowest first. A module may import its own stage and the stages below it, never one above.
STAGES = (
    ("foundation", ("io", "logs", "integrity", "markdown", "schemas", "registry", "config", "fingerprint")),
    ("data", ("data",)),
    ("models", ("models",)),
    ("activations", ("activations",)),
    ("bridges", ("bridges",)),
    ("injection", ("injection",)),
    ("kv", ("kv",)),
    ("stats", ("stats",)),
    ("causal", ("causal",)),
    ("report", ("report",)),
    ("composition", ("settings", "catalog", "plan", "__main__")),
)
RANK = {top: rank for rank, (_, tops) in enumerate(STAGES) for top in tops}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in path.parts}


def imports(path: Path, known: set[str], *, module_level: bool) -> set[str]:
    """The package's modules that ``path`` imports: those that importing it runs (``module_level``), or every
    one it names at any depth (type-checking blocks excepted: they never run)."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not (module_level and in_function):
                if isinstance(child, ast.Import):
                    names = [alias.name for alias in child.names]
                else:
                    base = child.module or ""
                    if child.level:
                        parts = package.split(".")
                        base = ".".join([*parts[: len(parts) - child.level + 1], *([base] if base else [])])
                    names = [base, *(f"{base}.{alias.name}" for alias in child.names)]
                found.update(name for name in names if name in known)
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found - {own}


def stage(name: str) -> int:
    parts = name.split(".")
    return RANK[parts[1]] if len(parts) > 1 else 0  # the package itself: its __init__ imports nothing


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                out.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    return out


def test_every_module_has_a_stage():
    unplaced = sorted({name.split(".")[1] for name in modules() if "." in name} - set(RANK))
    assert not unplaced, f"place these in STAGES: {unplaced}"


@pytest.mark.parametrize("module_level", [True, False], ids=["at-import", "any-depth"])
def test_the_imports_have_no_cycle(module_level):
    """Neither what importing a module runs, nor what its functions import when they run (a function-level
    import that closes a cycle works only while nothing calls it during an import)."""
    found = modules()
    graph = {name: imports(path, set(found), module_level=module_level) for name, path in found.items()}
    for name, path in found.items():
        if "import_all(" in path.read_text():  # a registry imports every module beside it
            graph[name] |= {target for target in found if target.rpartition(".")[0] == name}
        # an item importing its registry's package, which imports it, is the registry filling itself
        graph[name] = {target for target in graph[name] if not name.startswith(target + ".")}
    assert cycles(graph) == []


def test_no_import_climbs_from_a_lower_stage_to_a_higher_one():
    found = modules()
    upward = sorted(f"{name} ({STAGES[stage(name)][0]}) -> {target} ({STAGES[stage(target)][0]})"
                    for name, path in found.items() for target in imports(path, set(found), module_level=False)
                    if stage(target) > stage(name))
    assert upward == []


# ---------------------------------------------------------------------------- drop-in items

ROOT = PACKAGE.parents[1]

METHOD = '''
import numpy as np

from actbridge.bridges.maps import Moments
from actbridge.bridges.methods import BRIDGE_METHODS, BridgeMethod, FittedMap
from actbridge.bridges.solvers import fit_ridge


@BRIDGE_METHODS.register
class Probe(BridgeMethod):
    name = "{name}"
    summary = "a dropped-in method that imports the maps at its top"
    keys = ("ridge_penalties",)
    settings_schema = {{"{name}": {{"type": "object", "additionalProperties": False, "default": {{}},
                                   "properties": {{"scale": {{"type": "number", "default": 1.0}}}}}}}}
    in_default = False

    def fit(self, train, val, settings, seed):
        weight, bias, info = fit_ridge(Moments.of(train(), outer_y=False), Moments.of(val(), outer_y=False),
                                       settings["ridge_penalties"])
        return FittedMap(settings["{name}"]["scale"] * weight, bias, info)
'''

CONDITION = '''
from actbridge.injection.conditions import CONDITIONS, Condition, Edit


@CONDITIONS.register
class Unused(Condition):
    name = "{name}"
    formula = "h + b / 2"
    purpose = "a dropped-in condition no config runs"
    in_default = False

    def edit(self, alpha, inputs):
        return Edit(1.0, 0.5 * inputs.bridged)
'''


def copy_of_the_package(tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "workflow" / "scripts", tmp_path / "workflow" / "scripts")
    return tmp_path / "src"


def run_python(source: str, src: Path, *args: str) -> str:
    """``source`` run by this Python from the checkout's root, with only the package copy ``src`` importable."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", source, *args], cwd=ROOT, check=True, capture_output=True, text=True,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    return out.stdout


VALIDATE_EVERY_CONFIG = '''
import sys, yaml
{first}
from actbridge.catalog import load_schema, validate_config
from actbridge.config import merge_config
base = yaml.safe_load(open("config/config.yaml"))
for name in ("config/config.yaml", "config/all_methods.yaml", "config/pythia.yaml", "config/pretrained.yaml",
             ".test/config/config.yaml"):
    validate_config(merge_config(base, yaml.safe_load(open(name))))
enum = load_schema()["properties"]["bridge"]["properties"]["methods"]["items"]["enum"]
assert {{"aaa_probe", "zzz_probe", "trained", "lasso"}} <= set(enum), enum
probe = merge_config(base, {{"bridge": {{"methods": ["ridge", "aaa_probe"], "aaa_probe": {{"scale": 2.0}}}}}})
assert validate_config(probe)["bridge"]["aaa_probe"] == {{"scale": 2.0}}
print("ok")
'''


@pytest.mark.parametrize("first", [
    "",
    "import actbridge.bridges.maps",
    "import actbridge.bridges.methods.zzz_probe",
    "from actbridge.config import schema_default; schema_default('stats.resamples')",
    "import actbridge.data.worlds",
], ids=["catalog-first", "maps-first", "item-first", "config-first", "data-first"])
def test_dropped_in_methods_that_import_the_maps_at_the_top_load_in_any_order(tmp_path, first):
    """Methods under names that sort first and last (and one named as the issue's failing ``lasso``), each
    importing the maps and the solvers at its top, as anyone would write it: every config still validates,
    whatever is imported first."""
    src = copy_of_the_package(tmp_path)
    for name in ("aaa_probe", "zzz_probe", "lasso"):
        (src / "actbridge" / "bridges" / "methods" / f"{name}.py").write_text(METHOD.format(name=name))
    assert run_python(VALIDATE_EVERY_CONFIG.format(first=first), src).strip() == "ok"


def test_importing_a_lower_stage_loads_no_registry(tmp_path):
    """The dataset generator, the maps and the configuration import no condition and no bridge method."""
    src = copy_of_the_package(tmp_path)
    loaded = run_python("import sys\nimport actbridge.data.worlds, actbridge.bridges.maps, actbridge.config\n"
                        "print(' '.join(sorted(sys.modules)))", src).split()
    assert not [name for name in loaded if ".conditions" in name or ".methods" in name]


FINGERPRINTS = '''
import json, sys, yaml
from pathlib import Path
from actbridge.catalog import item_files, validate_config
from actbridge.config import merge_config
from actbridge.fingerprint import script_fingerprint
root = Path(sys.argv[1])
base = yaml.safe_load(open("config/config.yaml"))
config = validate_config(merge_config(base, json.loads(sys.argv[2])))
items = item_files(config)
print(json.dumps({path.stem: script_fingerprint(path, root / "src" / "actbridge", items=items)
                  for path in sorted((root / "workflow" / "scripts").glob("*.py"))}))
'''


def test_an_unconfigured_item_changes_no_fingerprint(tmp_path):
    """Adding a condition file and a method file that no config names reruns nothing; configuring the
    condition changes the fingerprints of the rules that run conditions or read their declarations only."""
    import json

    src = copy_of_the_package(tmp_path)

    def fingerprints(overlay: dict) -> dict[str, str]:
        return json.loads(run_python(FINGERPRINTS, src, str(src.parent), json.dumps(overlay)).strip().splitlines()[-1])

    before = fingerprints({})
    (src / "actbridge" / "injection" / "conditions" / "aaa_unused.py").write_text(CONDITION.format(name="aaa_unused"))
    (src / "actbridge" / "bridges" / "methods" / "zzz_unused.py").write_text(METHOD.format(name="zzz_unused"))
    assert fingerprints({}) == before
    configured = fingerprints({"injection": {"conditions": ["none", "add", "aaa_unused"]}})
    changed = sorted(name for name in before if configured[name] != before[name])
    # the rules that run conditions or read their declarations, and no other (no causal job, no bridge fit, no
    # figure: the figures get what they draw as params)
    assert {"inject", "condition_stats"} <= set(changed) <= {"inject", "condition_stats", "stats_summary"}, changed
