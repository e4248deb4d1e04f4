"""The install: the test environment is exactly the lock, and the library works as a wheel.

The lock (requirements/lock.txt, written by tools/lock.py from one pip resolution) is what `make install`
installs; these tests fail when the suite runs against anything else, and when the package reads a file
that does not travel inside it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"


def lock_tool():
    """tools/lock.py, the one reader and writer of the lock (it runs before anything is installed)."""
    spec = importlib.util.spec_from_file_location("actbridge_lock_tool", ROOT / "tools" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_is_well_formed_and_for_this_python():
    pins, fields = lock_tool().read_lock(LOCK)
    assert {"torch", "transformers", "snakemake", "pytest", "pip", "setuptools"} <= set(pins)
    assert all("+" not in version for version in pins.values()), "build labels (+cpu) belong to no lock line"
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert fields["python"] == running, f"the lock was resolved for Python {fields['python']}, tests run on {running}"


def test_the_environment_is_the_lock():
    """Every locked distribution installed at its version, nothing else installed beside them (but ours, and
    what another build of the locked torch brings along, e.g. CUDA libraries)."""
    tool = lock_tool()
    pins, _ = tool.read_lock(LOCK)
    installed = {tool.normalize(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    installed.pop("actbridge", None)
    torch_brings = {tool.normalize(Requirement(requirement).name) for requirement in metadata.requires("torch") or ()}
    wrong = {name: f"{installed[name]} installed, {version} locked" for name, version in pins.items()
             if name in installed and tool.public_version(installed[name]) != version}
    missing = sorted(set(pins) - set(installed))
    extra = sorted(set(installed) - set(pins) - torch_brings)
    assert not (wrong or missing or extra), (
        f"this environment is not {LOCK.relative_to(ROOT)}: versions {wrong}, not installed {missing}, "
        f"not locked {extra}. `make install` into a new .venv installs the lock; `make lock` refreshes it")


def test_lock_tool_round_trips_a_pip_report(tmp_path):
    """A report as `pip install --dry-run --report` writes it: ours left out, build labels dropped, names
    normalized, and every conda pin rewritten to the locked version (python to the lock's major.minor)."""
    tool = lock_tool()
    report = {"environment": {"python_full_version": "3.11.7", "sys_platform": "linux", "platform_machine": "x86_64"},
              "install": [{"metadata": {"name": name, "version": version}} for name, version in
                          (("actbridge", "0.1.0"), ("torch", "2.13.0+cpu"), ("PyYAML", "6.0.4"),
                           ("huggingface_hub", "2.4.0"))]}
    pins = tool.resolved_pins(report, exclude={"actbridge"})
    assert pins == {"huggingface-hub": "2.4.0", "pyyaml": "6.0.4", "torch": "2.13.0"}
    lock = tmp_path / "lock.txt"
    lock.write_text(tool.lock_text(pins, environment=report["environment"]))
    assert tool.read_lock(lock) == (pins, {"python": "3.11", "platform": "linux x86_64"})
    envs = tmp_path / "envs"
    envs.mkdir()
    (envs / "a.yaml").write_text("dependencies:\n  - python=3.10\n  - pytorch=2.9  # why\n  - pyyaml=6.0\n"
                                 "  - huggingface_hub=1.0\n")
    assert tool.pin_envs(envs, pins, python="3.11") == ["a.yaml"]
    assert (envs / "a.yaml").read_text() == ("dependencies:\n  - python=3.11\n  - pytorch=2.13.0  # why\n"
                                             "  - pyyaml=6.0.4\n  - huggingface_hub=2.4.0\n")
    assert tool.pin_envs(envs, pins, python="3.11") == []
    (envs / "b.yaml").write_text("dependencies:\n  - scipy=1.17\n")
    with pytest.raises(SystemExit, match="scipy is not in the lock"):
        tool.pin_envs(envs, pins, python="3.11")


def test_make_install_installs_through_the_lock(tmp_path):
    """Every pip install that `make install` and the peers step run (as `make -n` prints them for a new venv)
    goes through the lock as constraints, and torch is asked for at the lock's version."""
    venv = tmp_path / "venv"
    commands = subprocess.run(["make", "-n", f"VENV={venv}", f"{venv}/.installed", f"{venv}/.peers"], cwd=ROOT,
                              check=True, capture_output=True, text=True).stdout.splitlines()
    installs = [line for line in commands if "pip install" in line]
    assert len(installs) == 4, commands
    assert all("--constraint requirements/lock.txt" in line for line in installs), installs
    pins, _ = lock_tool().read_lock(LOCK)
    assert any(line.endswith(f'"torch=={pins["torch"]}"') for line in installs), installs


def test_the_wheel_carries_what_the_package_reads(tmp_path):
    """Built as a wheel, installed (not editable) into a new venv, imported from outside the checkout: it
    validates config/config.yaml and builds the typed config tree, its schema read from inside the package."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(ROOT)], check=True, capture_output=True)
    (wheel,) = wheels.glob("actbridge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "actbridge/config.schema.yaml" in archive.namelist()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True)
    # the dependencies from this environment's site-packages as plain paths: its .pth files (our editable
    # install's among them) are not read, so actbridge can come only from the wheel
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dependencies.pth").write_text(
        "\n".join(sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})) + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    probe = (
        "import json, sys, yaml\n"
        "import actbridge\n"
        "from actbridge.catalog import validate_config\n"
        "from actbridge.config import SCHEMA_PATH, schema_default\n"
        "from actbridge.settings import Settings\n"
        f"raw = yaml.safe_load(open({str(ROOT / 'config' / 'config.yaml')!r}))\n"
        "settings = Settings.from_config(validate_config(raw))\n"
        "print(json.dumps({'package': actbridge.__file__, 'schema': str(SCHEMA_PATH),\n"
        "                  'epochs': schema_default('stats.resamples'), 'settings': repr(settings),\n"
        "                  'src_on_path': any(p.startswith(sys.argv[1]) for p in sys.path)}))\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    out = subprocess.run([str(python), "-I", "-c", probe, str(ROOT / "src")], cwd=outside, env=env, check=True,
                         capture_output=True, text=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["package"].startswith(str(site)), found
    assert found["schema"] == str(site / "actbridge" / "config.schema.yaml")
    assert not found["src_on_path"]
    import yaml

    from actbridge.catalog import validate_config
    from actbridge.config import schema_default
    from actbridge.settings import Settings

    assert found["epochs"] == schema_default("stats.resamples")
    checkout = Settings.from_config(validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text())))
    assert found["settings"] == repr(checkout), "the wheel builds another config tree than the checkout"


def test_the_workflow_schema_is_the_packaged_file():
    """One file, never two: workflow/schemas/ links to the schema the package carries."""
    from actbridge.config import SCHEMA_PATH

    linked = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    assert linked.is_symlink() and linked.resolve() == SCHEMA_PATH.resolve()
    assert SCHEMA_PATH.parent == ROOT / "src" / "actbridge"


def test_the_suite_turns_deprecations_into_errors():
    """pyproject.toml's filterwarnings: a deprecated call (ours, or a library's that our calls reach) fails the
    suite the day it appears, rather than a user's run the day the old API is removed."""
    import warnings

    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        with pytest.raises(category):
            warnings.warn("planted", category)
