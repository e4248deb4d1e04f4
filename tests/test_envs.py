"""The conda environments, checked statically (no conda channel is reachable from CI machines).

Each rule names a pinned env; the env must hold every third-party package its script imports,
directly or through the actbridge modules it reaches; the pins must agree across envs and with
the lock, the versions this test suite runs against."""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from actbridge.fingerprint import import_closure

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "workflow" / "rules"
PACKAGE = ROOT / "src" / "actbridge"

# import name -> conda-forge package name
CONDA_NAMES = {
    "numpy": "numpy", "pyarrow": "pyarrow", "yaml": "pyyaml", "jsonschema": "jsonschema", "scipy": "scipy",
    "torch": "pytorch", "transformers": "transformers", "tokenizers": "tokenizers", "safetensors": "safetensors",
    "huggingface_hub": "huggingface_hub", "tqdm": "tqdm", "gguf": "gguf", "matplotlib": "matplotlib",
    "polars": "polars",
}
# Provided by Snakemake's script directive, not by the env.
PROVIDED = {"snakemake", "actbridge"}
RULE_BLOCK = re.compile(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)+)", re.MULTILINE)


def rule_blocks() -> dict[str, str]:
    blocks = {}
    for path in sorted(RULES.glob("*.smk")):
        for name, body in RULE_BLOCK.findall(path.read_text()):
            blocks[name] = body
    return blocks


def directive(body: str, name: str) -> str | None:
    match = re.search(rf"^\s+{name}:\n\s+\"([^\"]+)\"", body, re.MULTILINE)
    return match.group(1) if match else None


def env_dependencies(env_file: Path) -> dict[str, str]:
    """package -> pinned version, from an env file's dependencies."""
    pins = {}
    for entry in yaml.safe_load(env_file.read_text())["dependencies"]:
        assert isinstance(entry, str), f"{env_file.name}: pip sections are not used here: {entry}"
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==?\s*([0-9][0-9A-Za-z.*]*)", entry)
        assert match, f"{env_file.name}: {entry!r} is not pinned (name=version)"
        pins[match.group(1)] = match.group(2)
    return pins


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every import in a file, function-level imports included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
            if node.module == "actbridge":  # `from actbridge import io`
                names |= {f"actbridge.{alias.name}" for alias in node.names}
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("actbridge."):
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:  # `from .io import ...`
            names.add(f"actbridge.{node.module}")
    return names


@cache
def third_party_imports(path: Path) -> frozenset[str]:
    """Third-party top-level imports of a file and of every actbridge module importing it runs (the import
    closure of the rules' code fingerprints, registries included, less other modules' function-level imports:
    those run only on the paths that need them, e.g. a method's fit, never in a figure job)."""
    found = set()
    for current in (path, *import_closure(path, function_level=False)):
        found |= {name for name in imported_modules(current) if not name.startswith("actbridge.")
                  and name not in sys.stdlib_module_names and name not in PROVIDED and name != "__future__"}
    return frozenset(found)


def test_every_rule_names_an_env_and_a_script_that_exist():
    blocks = rule_blocks()
    assert len(blocks) >= 15
    for name, body in blocks.items():
        if name == "all":
            continue
        env, script = directive(body, "conda"), directive(body, "script")
        assert env and (RULES / env).resolve().is_file(), f"rule {name}: no conda env file"
        assert script and (RULES / script).resolve().is_file(), f"rule {name}: no script"


@pytest.mark.parametrize("name", sorted(set(rule_blocks()) - {"all"}))
def test_the_rules_env_covers_what_its_script_imports(name):
    body = rule_blocks()[name]
    env = (RULES / directive(body, "conda")).resolve()
    script = (RULES / directive(body, "script")).resolve()
    pins = env_dependencies(env)
    imports = third_party_imports(script)
    unknown = imports - set(CONDA_NAMES)
    assert not unknown, f"{script.name} imports {sorted(unknown)}: add them to CONDA_NAMES and an env"
    missing = {CONDA_NAMES[module] for module in imports} - set(pins)
    assert not missing, f"rule {name}: {env.name} lacks {sorted(missing)} ({script.name} needs them)"
    assert "python" in pins


def test_the_envs_together_cover_the_package():
    pinned = set().union(*(env_dependencies(env) for env in (ROOT / "workflow" / "envs").glob("*.yaml")))
    for module in PACKAGE.glob("*.py"):
        imports = third_party_imports(module)
        assert imports <= set(CONDA_NAMES), f"{module.name}: unknown imports {sorted(imports - set(CONDA_NAMES))}"
        assert {CONDA_NAMES[m] for m in imports} <= pinned, module.name


def test_env_pins_are_the_lock():
    """One source of versions: every conda env pins each package at the version requirements/lock.txt locks
    (the set `make install` installs and the suite runs against), python at the lock's; `make lock` rewrites
    both from one resolution (tools/lock.py)."""
    from test_install import LOCK, lock_tool

    tool = lock_tool()
    pins, fields = tool.read_lock(LOCK)
    disagree = {}
    for env in sorted((ROOT / "workflow" / "envs").glob("*.yaml")):
        for package, version in env_dependencies(env).items():
            locked = fields["python"] if package == "python" else pins.get(tool.conda_distribution(package))
            if version != locked:
                disagree[f"{env.name}: {package}"] = f"env pins {version}, lock has {locked}"
    assert not disagree, f"conda envs and the lock disagree (run `make lock`): {disagree}"


def test_shard_readers_and_closed_form_bridges_do_not_import_torch():
    """A ridge/procrustes/lowrank bridge job and the metrics gatherer load neither torch nor transformers:
    torch's import is most of such a job (125 of them in the default run)."""
    import subprocess

    code = ("import sys; sys.path.insert(0, 'src')\n"
            "import actbridge.activations.store, actbridge.bridges.jobs, actbridge.bridges.maps, actbridge.io\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
