"""Code fingerprints: prose edits rerun nothing, behaviour edits rerun what runs the code."""

from __future__ import annotations

from actbridge.fingerprint import code_fingerprint

CODE = '''"""Module docstring."""

import math


def radius(area: float) -> float:
    """The radius of a circle of this area."""
    return math.sqrt(area / math.pi)  # inverse of pi r^2
'''


def fingerprint(tmp_path, text, name="module.py"):
    path = tmp_path / name
    path.write_text(text)
    return code_fingerprint([path])


def test_comments_docstrings_and_wrapping_do_not_change_the_fingerprint(tmp_path):
    base = fingerprint(tmp_path, CODE)
    prose = CODE.replace("Module docstring.", "A longer module docstring,\nover two lines.")
    prose = prose.replace("The radius of a circle of this area.", "Radius.").replace("# inverse of pi r^2", "")
    wrapped = prose.replace("return math.sqrt(area / math.pi)", "return math.sqrt(\n        area / math.pi\n    )")
    assert fingerprint(tmp_path, prose) == base
    assert fingerprint(tmp_path, wrapped + "\n\n# a trailing comment\n") == base


def test_code_changes_do_change_it(tmp_path):
    base = fingerprint(tmp_path, CODE)
    assert fingerprint(tmp_path, CODE.replace("area / math.pi", "area / math.tau")) != base
    assert fingerprint(tmp_path, CODE.replace("def radius", "def circle_radius")) != base
    # a string that is not a docstring is data: changing it changes behaviour
    assert fingerprint(tmp_path, CODE + 'UNITS = "m"\n') != fingerprint(tmp_path, CODE + 'UNITS = "cm"\n')


def test_a_function_that_is_only_a_docstring_stays_valid_code(tmp_path):
    text = 'def later():\n    """Not written yet."""\n'
    assert fingerprint(tmp_path, text) == fingerprint(tmp_path, 'def later():\n    "Another note."\n')


def test_the_closure_skips_hints_and_declaration_reads_and_follows_function_imports(tmp_path):
    from actbridge.fingerprint import DECLARATIONS_ONLY, import_closure

    package = tmp_path / "actbridge"
    package.mkdir()
    for name in ("__init__", "hinted", "declared", "lazy", "eager", "fallback"):
        (package / f"{name}.py").write_text("")
    (package / "main.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import actbridge.eager\n"
        "if TYPE_CHECKING:\n    import actbridge.hinted\nelse:\n    import actbridge.fallback\n"
        f"def read():\n    import actbridge.declared  {DECLARATIONS_ONLY}\n    import actbridge.lazy\n")
    script = tmp_path / "script.py"
    script.write_text("import actbridge.main\n")
    names = {p.stem for p in import_closure(script, package)}
    assert names == {"__init__", "main", "eager", "fallback", "lazy"}
    assert {p.stem for p in import_closure(script, package, function_level=False)} == {"__init__", "main", "eager",
                                                                                         "fallback"}
