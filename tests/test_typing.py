"""The package is typed: ``dtlive/py.typed`` ships with it, and mypy (``[tool.mypy]`` in pyproject.toml) checks it.

``scripts/test.sh`` runs ``mypy`` on the whole package; here the marker is checked to be packaged, and the
configuration to find a wrong type inside an unannotated function and a ``# type: ignore`` that ignores nothing.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MYPY = Path(sys.executable).with_name("mypy")


def test_the_typed_marker_is_in_the_package_and_its_package_data():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["dtlive"]
    assert (ROOT / "dtlive" / "py.typed").is_file()
    assert any(fnmatch.fnmatch("py.typed", g) for g in globs)


@pytest.mark.slow
def test_the_checker_reports_errors_in_unannotated_code_and_unused_ignores(tmp_path):
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "sample.py").write_text(
        "def unannotated():\n"
        "    n: int = 'three'\n"
        "    return n\n"
        "\n"
        "\n"
        "x: int = 3  # type: ignore[assignment]\n"
    )
    result = subprocess.run([str(MYPY), "--cache-dir", str(tmp_path / "cache"), "sample.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'sample.py:2: error: Incompatible types in assignment (expression has type "str", variable has type ' \
           '"int")  [assignment]' in result.stdout
    assert 'sample.py:6: error: Unused "type: ignore" comment  [unused-ignore]' in result.stdout
