"""Fingerprints of the library code a rule runs, blind to prose.

Snakemake's code trigger sees only a rule's own script, so every rule passes a fingerprint of
the ``actbridge`` modules it calls as a param: changing the science reruns it. The fingerprint
is taken over the modules' syntax trees with docstrings removed, so editing a comment or a
docstring, or re-wrapping lines, reruns nothing; changing what the code does reruns the rules
that run it. (The tree's printed form can differ between Python minor versions: running the
workflow under another Python may rerun jobs once.)

Which modules: the script's import closure (:func:`import_closure`), derived, never listed. It
errs on the side of rerunning: imports inside functions count, since they may run. Of a registry's
items (the modules its package's ``__init__`` imports with ``import_all``), the closure holds those
the run configures (``items``, from :func:`actbridge.catalog.item_files`) and what they import: an
item no rule runs changes no fingerprint, and one a rule runs reruns it when its code changes.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path
from typing import Iterable, Mapping

_WITH_DOCSTRINGS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _is_docstring(statement: ast.stmt) -> bool:
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


# A workflow fingerprints some 30 scripts whose import closures share most modules: each source text is parsed
# once per process (keyed by the text itself, so an edited file is parsed again).
@functools.lru_cache(maxsize=None)
def code_text(source: str) -> str:
    """The source's syntax tree without docstrings, comments, blank lines or line positions."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, _WITH_DOCSTRINGS) and node.body and _is_docstring(node.body[0]):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=True, include_attributes=False)


def code_fingerprint(paths: Iterable[str | Path]) -> str:
    """16 hex digits over the code of ``paths``, in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(code_text(Path(path).read_text()).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


PACKAGE_ROOT = Path(__file__).resolve().parent
# A package whose __init__ calls this imports every module beside it (actbridge.registry): its items.
IMPORT_ALL = "import_all"


def _module_path(name: str, package_root: Path) -> Path | None:
    """The file of ``actbridge.a.b`` (a module or a package's ``__init__``), if it is one of ours."""
    parts = name.split(".")
    if parts[0] != package_root.name:
        return None
    base = package_root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, package_root: Path) -> str:
    parts = path.relative_to(package_root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# An import that reads other modules' declarations only (names, schemas: what reaches a job as its params), not
# code a job runs: marked with this comment on its line, it is not followed.
DECLARATIONS_ONLY = "# fingerprint: declarations only"


def _imports(path: Path, package_root: Path, *, function_level: bool = True) -> tuple[set[str], bool]:
    """Every ``actbridge`` module a file names in an import: at any depth of its code, or with
    ``function_level=False`` only those that run when it is imported (not inside a function); and whether
    it is a registry's ``__init__`` (it calls ``import_all``)."""
    names, registry = _imports_in(path.read_text(), path, package_root, function_level)
    return set(names), registry


@functools.lru_cache(maxsize=None)
def _imports_in(source: str, path: Path, package_root: Path, function_level: bool) -> tuple[frozenset[str], bool]:
    own = _module_name(path, package_root) if path.is_relative_to(package_root) else ""
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    lines = source.splitlines()
    names: set[str] = set()
    registry = False

    def visit(node: ast.AST, in_function: bool) -> None:
        nonlocal registry
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", getattr(child.test, "attr", None)) == \
                    "TYPE_CHECKING":  # hints only: never runs
                visit(ast.Module(body=child.orelse, type_ignores=[]), in_function)
                continue
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and (function_level or not in_function):
                if DECLARATIONS_ONLY not in lines[child.lineno - 1]:
                    names.update(_named(child, package))
            elif (isinstance(child, ast.Call) and getattr(child.func, "id", getattr(child.func, "attr", None))
                  == IMPORT_ALL and path.name == "__init__.py"):
                registry = True
            visit(child, inside)

    visit(ast.parse(source), False)
    return frozenset(names), registry


def _named(node: ast.Import | ast.ImportFrom, package: str) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        parts = package.split(".")
        module = ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])])
    else:
        module = node.module or ""
    return {module, *(f"{module}.{alias.name}" for alias in node.names)}  # `from actbridge.x import module`


def import_closure(path: str | Path, package_root: Path = PACKAGE_ROOT, *, function_level: bool = True,
                   items: Mapping[str, Iterable[Path]] | None = None, not_taken: Iterable[Path] = ()) -> list[Path]:
    """The ``actbridge`` modules a file may run: every module it imports, theirs in turn, and the ``__init__``
    of each package on the way; sorted. Imports inside functions count (they may run), unless
    ``function_level`` is False: then only what importing the file runs, plus the file's own
    function-level imports. Imports marked :data:`DECLARATIONS_ONLY` are not followed.

    A registry package that enters the closure brings the item modules ``items[package]`` (its configured
    items); with ``items`` None, every module beside its ``__init__`` (all that importing it runs).

    ``not_taken``: modules that the file itself imports but does not run, for a script with one code path per
    kind of job whose fingerprint covers the path a job takes (:func:`script_fingerprint`): the file's own
    imports of them are not followed; a module of the closure that imports one still brings it in."""
    not_taken = {Path(module).resolve() for module in not_taken}
    seen: set[Path] = set()
    start = Path(path).resolve()
    queue = [start]
    while queue:
        current = queue.pop()
        names, registry = _imports(current, package_root, function_level=function_level or current == start)
        if registry:
            package = _module_name(current, package_root)
            chosen = None if items is None else items.get(package)
            members = ([p for p in current.parent.glob("*.py") if p.name != "__init__.py"] if chosen is None
                       else [Path(p).resolve() for p in chosen])
            for member in members:
                if member not in seen:
                    seen.add(member)
                    queue.append(member)
        for name in names:
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                found = _module_path(".".join(parts[:depth]), package_root)
                if current == start and found in not_taken:
                    continue
                if found is not None and found not in seen:
                    seen.add(found)
                    queue.append(found)
    return sorted(seen, key=lambda p: p.relative_to(package_root).as_posix())


def script_fingerprint(script: str | Path, package_root: Path = PACKAGE_ROOT, *,
                       items: Mapping[str, Iterable[Path]] | None = None, not_taken: Iterable[Path] = ()) -> str:
    """The fingerprint of the library code a script runs: its whole import closure with the registries'
    configured ``items`` (not the script itself, which Snakemake's own code trigger covers), less what only the
    code paths it does not take import (``not_taken``, see :func:`import_closure`)."""
    return code_fingerprint(import_closure(script, package_root, items=items, not_taken=not_taken))
