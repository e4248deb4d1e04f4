"""Fingerprints of the library code a rule runs, blind to prose.

Snakemake's code trigger sees only a rule's own script, so every rule passes a fingerprint of
the ``actbridge`` modules it calls as a param: changing the science reruns it. The fingerprint
is taken over the modules' syntax trees with docstrings removed, so editing a comment or a
docstring, or re-wrapping lines, reruns nothing; changing what the code does reruns the rules
that run it. (The tree's printed form can differ between Python minor versions: running the
workflow under another Python may rerun jobs once.)
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Iterable

_WITH_DOCSTRINGS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _is_docstring(statement: ast.stmt) -> bool:
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


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
