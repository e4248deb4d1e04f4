"""Write the lock file and the conda envs' pins from one resolution by pip.

``make lock`` asks pip to resolve the newest versions within pyproject.toml's ranges (``pip install
--dry-run --report``), then runs::

    python tools/lock.py REPORT.json --lock requirements/lock.txt --envs workflow/envs

The lock lists every distribution pip would install, at its exact version; ``make install`` installs
under it as a constraints file, so a fresh clone gets the set the suite ran against. The conda envs of
the workflow's rules pin the same versions: their pins are rewritten here, and tests/test_envs.py fails
when the two disagree. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

# conda-forge names that differ from the normalized distribution name
CONDA_TO_DISTRIBUTION = {"pytorch": "torch"}
HEADER = """\
# The locked install: every distribution that `make install` and the peers extra install, at the exact
# version the test suite ran against. `make install` installs under it as a pip constraints file.
# Refresh with `make lock` (README, "Refreshing the lock"); never edit by hand: tools/lock.py writes it
# and the conda envs' pins in workflow/envs/ from one pip resolution.
# torch is pinned without its local label (+cpu, +cu128): one version, any build of it.
"""
LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)==([^\s;#]+)\s*$")
ENV_PIN = re.compile(r"^(\s*-\s*)([A-Za-z0-9][A-Za-z0-9._\-]*)(\s*=+\s*)([^\s#]+)(.*)$")


def normalize(name: str) -> str:
    """PEP 503 name: ``PyYAML`` and ``pyyaml``, ``huggingface_hub`` and ``huggingface-hub`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: the build label says which wheel, not which release."""
    return version.split("+", 1)[0]


def resolved_pins(report: dict, *, exclude: set[str]) -> dict[str, str]:
    """normalized name -> exact version of every distribution a ``pip install --report`` would install."""
    pins = {}
    for item in report["install"]:
        name = normalize(item["metadata"]["name"])
        if name not in exclude:
            pins[name] = public_version(item["metadata"]["version"])
    return dict(sorted(pins.items()))


def python_minor(environment: dict) -> str:
    """``3.11`` from a pip report's environment markers."""
    return ".".join(environment["python_full_version"].split(".")[:2])


def lock_text(pins: dict[str, str], *, environment: dict) -> str:
    python = python_minor(environment)
    where = f"{environment['sys_platform']} {environment['platform_machine']}"
    lines = [HEADER, f"# python: {python}", f"# platform: {where}", ""]
    lines += [f"{name}=={version}" for name, version in pins.items()]
    return "\n".join(lines) + "\n"


def read_lock(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """(normalized name -> version, header fields such as ``python`` and ``platform``) of a lock file."""
    pins, fields = {}, {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        field = re.fullmatch(r"#\s*(python|platform):\s*(.+)", line.strip())
        if field:
            fields[field.group(1)] = field.group(2).strip()
        elif line.strip() and not line.startswith("#"):
            match = LOCK_LINE.match(line)
            if not match:
                raise ValueError(f"{path}: {line!r} is not name==version")
            pins[normalize(match.group(1))] = match.group(2)
    return pins, fields


def conda_distribution(conda_name: str) -> str:
    return normalize(CONDA_TO_DISTRIBUTION.get(conda_name, conda_name))


def pin_envs(envs: Path, pins: dict[str, str], *, python: str) -> list[str]:
    """Rewrite every ``name=version`` dependency of the conda env files under ``envs`` to the lock's
    version (``python`` to the lock's major.minor); the names of changed files."""
    changed = []
    for env in sorted(envs.glob("*.yaml")):
        text = env.read_text(encoding="utf-8")
        out = []
        for line in text.splitlines(keepends=True):
            match = ENV_PIN.match(line.rstrip("\n"))
            if match:
                lead, name, _, _, rest = match.groups()
                version = python if name == "python" else pins.get(conda_distribution(name))
                if version is None:
                    raise SystemExit(f"{env}: {name} is not in the lock; add it to pyproject.toml or drop it")
                line = f"{lead}{name}={version}{rest}\n"
            out.append(line)
        if "".join(out) != text:
            env.write_text("".join(out), encoding="utf-8")
            changed.append(env.name)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="pip install --dry-run --report output")
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--envs", type=Path, required=True, help="the folder of the rules' conda env files")
    parser.add_argument("--exclude", nargs="*", default=["actbridge"], help="distributions left out (ours)")
    args = parser.parse_args()
    report = json.loads(args.report.read_text(encoding="utf-8"))
    pins = resolved_pins(report, exclude={normalize(name) for name in args.exclude})
    text = lock_text(pins, environment=report["environment"])
    old = read_lock(args.lock)[0] if args.lock.exists() else {}
    args.lock.parent.mkdir(parents=True, exist_ok=True)
    if not args.lock.exists() or args.lock.read_text(encoding="utf-8") != text:
        args.lock.write_text(text, encoding="utf-8")  # untouched when equal: make install's target stays fresh
    changed = pin_envs(args.envs, pins, python=python_minor(report["environment"]))
    moved = {name: (old.get(name), version) for name, version in pins.items() if old.get(name) != version}
    gone = sorted(set(old) - set(pins))
    print(f"{args.lock}: {len(pins)} distributions; {len(moved)} changed, {len(gone)} dropped")
    for name, (before, after) in moved.items():
        print(f"  {name}: {before or '(new)'} -> {after}")
    for name in gone:
        print(f"  {name}: {old[name]} -> (dropped)")
    print(f"conda envs rewritten: {', '.join(changed) if changed else 'none'}")


if __name__ == "__main__":
    main()
