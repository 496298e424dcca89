"""The layering contract (``[tool.importlinter]`` in pyproject.toml): the pure core imports no Kafka, storage,
streaming or ui code. ``scripts/test.sh`` runs ``lint-imports`` on the tree; here the contract is checked to hold
on the tree and to break when a core module imports the Kafka client."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def copy_of_the_project(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "dtlive", tree / "dtlive", ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_core_keeps_its_layer(tmp_path):
    result = lint(copy_of_the_project(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_core_module_importing_kafka_breaks_the_contract(tmp_path):
    tree = copy_of_the_project(tmp_path)
    windows = tree / "dtlive" / "core" / "windows.py"
    windows.write_text(windows.read_text() + "\nimport confluent_kafka  # noqa: E402,F401\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "dtlive.core.windows -> confluent_kafka" in result.stdout and "1 broken" in result.stdout


def test_a_module_over_500_lines_says_why_at_its_top():
    """Modules stay small; one that is not says why in its docstring (``Long on purpose: ...``)."""
    import ast

    unexplained = []
    for path in sorted((ROOT / "dtlive").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 500:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "Long on purpose" not in doc and "Just over 500 lines" not in doc:
                unexplained.append(str(path.relative_to(ROOT)))
    assert unexplained == []
