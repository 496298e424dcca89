"""Every public top-level function and class of ``dtlive`` shows how it is used: its docstring has a ``>>>`` example
(run by ``--doctest-modules``).

Public: a name at the top level of a module that does not start with ``_``. Left out: the ``cmd_*`` handlers of
``dtlive/deploy/cli.py`` (the command line is their interface) and the Alembic revisions under
``dtlive/storage/migrations/`` (Alembic calls them). :data:`NOT_YET` lists, by ``path:name``, the names still
without an example; a name documented since then must leave the list too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dtlive

PACKAGE = Path(dtlive.__file__).parent
ROOT = PACKAGE.parent

#: Still without an example (``path:name``, relative to the repository root).
NOT_YET: set[str] = set()


def _left_out(rel: str, name: str) -> bool:
    return rel.startswith("dtlive/storage/migrations/") or (rel == "dtlive/deploy/cli.py" and name.startswith("cmd_"))


def public_definitions() -> dict[str, str | None]:
    """``path:name`` -> docstring of every public top-level function and class under ``dtlive/``."""
    out: dict[str, str | None] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and \
                    not node.name.startswith("_") and not _left_out(rel, node.name):
                out[f"{rel}:{node.name}"] = ast.get_docstring(node)
    return out


def test_every_public_function_and_class_has_an_example():
    defs = public_definitions()
    missing = sorted(k for k, doc in defs.items() if ">>>" not in (doc or "") and k not in NOT_YET)
    assert not missing, f"{len(missing)} public names without a '>>>' example: {', '.join(missing)}"


def test_the_list_of_names_without_an_example_only_shrinks():
    defs = public_definitions()
    gone = sorted(k for k in NOT_YET if k not in defs)
    documented = sorted(k for k in NOT_YET if k in defs and ">>>" in (defs[k] or ""))
    assert not gone, f"no longer public top-level names, take them off NOT_YET: {', '.join(gone)}"
    assert not documented, f"these have an example now, take them off NOT_YET: {', '.join(documented)}"


def test_the_check_sees_a_missing_example(tmp_path, monkeypatch):
    """The scan finds public names, skips private ones and reads docstrings as they are."""
    pkg = tmp_path / "dtlive"
    pkg.mkdir()
    (pkg / "mod.py").write_text('def shown():\n    """Shown.\n\n    >>> shown()\n    """\n\n\n'
                                'def bare():\n    """No example."""\n\n\ndef _private():\n    pass\n\n\n'
                                'class Plain:\n    pass\n')
    monkeypatch.setitem(globals(), "PACKAGE", pkg)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    defs = public_definitions()
    assert sorted(defs) == ["dtlive/mod.py:Plain", "dtlive/mod.py:bare", "dtlive/mod.py:shown"]
    assert sorted(k for k, d in defs.items() if ">>>" not in (d or "")) == ["dtlive/mod.py:Plain", "dtlive/mod.py:bare"]
