"""Extras: the core's dependencies leave out what the extras bring, the table of their modules matches
pyproject.toml, and a feature whose extra is missing says so in one line naming the extra.

A missing package is simulated in a child process by blocking its import (``sys.modules[name] = None``, which makes
both ``import`` and ``importlib.util.find_spec`` see it as absent); ``tests/deploy/test_core_install.py`` checks
the same in a real environment without the extras.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dtlive.service.extras import EXTRAS, MissingExtra, extra, missing, require

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OPTIONAL = PROJECT["optional-dependencies"]
HEAVY = ("sqlalchemy", "alembic", "psycopg", "pyarrow", "dask", "distributed", "ipywidgets", "bqplot", "ipykernel",
         "voila", "jupyterlab", "papermill", "jupyterhub")


def names(reqs: list[str], seen: frozenset = frozenset()) -> set[str]:
    """Distribution names an extra's requirements install, dtlive's own extras (``dtlive[a,b]``) expanded."""
    out: set[str] = set()
    for text in reqs:
        req = Requirement(text)
        if canonicalize_name(req.name) == "dtlive":
            for sub in req.extras - seen:
                out |= names(OPTIONAL[sub], seen | {sub})
        else:
            out.add(canonicalize_name(req.name))
    return out


def installed_by(dists: set[str]) -> set[str]:
    """``dists`` and what they require directly (with the extras named), as installed here."""
    out = set(dists)
    for dist in dists:
        for text in requires(dist) or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", "distributed", "binary")):
                out.add(canonicalize_name(req.name))
    return out


def blocked(code: str, *modules: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a child Python where ``modules`` cannot be imported (as if not installed)."""
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_core_dependencies_leave_out_what_the_extras_bring():
    core = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    assert not core & {canonicalize_name(h) for h in HEAVY}
    assert set(EXTRAS) <= set(OPTIONAL)
    assert names(OPTIONAL["all"]) >= names([f"dtlive[{e}]" for e in EXTRAS])  # all: every extra


@pytest.fixture(scope="module")
def provides() -> dict[str, list[str]]:
    return packages_distributions()


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_every_module_of_an_extra_is_installed_by_that_extra(name, provides):
    if name == "hub" and missing("hub"):
        pytest.skip("the hub extra is installed by scripts/install_hub.sh (scripts/test.sh runs it)")
    wanted = installed_by(names(OPTIONAL[name]))
    for module in EXTRAS[name]:
        assert {canonicalize_name(d) for d in provides[module]} & wanted, (module, name)
    assert missing(name) == []  # the development environment has them all


def test_the_message_names_the_extra_and_what_to_type():
    err = MissingExtra("dask", "dtlive replay", ["distributed"])
    assert str(err) == ("dtlive replay needs the 'dask' extra: pip install 'dtlive[dask]' "
                        "(not installed: distributed)")
    assert isinstance(err, ModuleNotFoundError) and err.name == "distributed"
    with pytest.raises(KeyError, match="unknown extra"):
        require("nothing", "x")
    with pytest.raises(KeyError, match="not modules of the 'dask' extra"):
        missing("dask", "numpy")


def test_extra_turns_only_the_extras_own_missing_modules_into_the_message():
    with pytest.raises(ModuleNotFoundError) as exc, extra("dask", "here"):
        import dtlive_no_such_module  # noqa: F401
    assert not isinstance(exc.value, MissingExtra)  # not one of the extra's modules: unchanged


def test_a_module_needing_an_extra_says_which_when_imported_without_it():
    code = ("import dtlive\nfrom dtlive.deploy.cli import main\n"
            "for name in ('Dashboard', 'Ledger'):\n"
            "    try:\n        getattr(dtlive, name)\n"
            "    except ModuleNotFoundError as exc:\n        print(type(exc).__name__, exc)\n"
            "sys.exit(main(['runs']))\n")
    out = blocked(code, "bqplot", "sqlalchemy", "alembic")
    assert out.stdout.splitlines() == [
        "MissingExtra dtlive.ui.widgets needs the 'dashboard' extra: pip install 'dtlive[dashboard]' "
        "(not installed: bqplot)",
        "MissingExtra dtlive.storage.ledger needs the 'ledger' extra: pip install 'dtlive[ledger]' "
        "(not installed: sqlalchemy, alembic)"], out.stdout + out.stderr
    assert out.returncode == 1 and out.stderr.splitlines() == [  # the command: one line, no traceback
        "dtlive runs needs the 'ledger' extra: pip install 'dtlive[ledger]' (not installed: sqlalchemy, alembic)"]


@pytest.mark.parametrize(("argv", "absent", "line"), [
    (["dashboard", "--port", "1"], ("voila", "bqplot"),
     "dtlive dashboard needs the 'dashboard' extra: pip install 'dtlive[dashboard]' (not installed: bqplot, voila)"),
    (["demo", "--no-dashboard"], ("pyarrow",),
     "dtlive demo needs the 'ledger' extra: pip install 'dtlive[ledger]' (not installed: pyarrow)"),
    (["alerts", "listen"], ("papermill",),
     "dtlive alerts listen needs the 'alerts' extra: pip install 'dtlive[alerts]' (not installed: papermill)"),
])
def test_a_command_whose_extra_is_missing_says_so_in_one_line_before_it_starts(argv, absent, line, monkeypatch,
                                                                                capsys):
    from dtlive.deploy.cli import main

    for module in absent:  # seen as not installed (they are checked, not imported)
        monkeypatch.setitem(sys.modules, module, None)
    assert main(argv) == 1
    assert capsys.readouterr().err.splitlines() == [line]
