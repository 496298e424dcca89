"""Sphinx configuration of the dtlive documentation (PyData theme, MyST Markdown, MyST-NB notebooks).

Build it with ``bash scripts/docs.sh`` (warnings are errors; the notebooks are executed against a stack of
their own). The API reference is generated from the docstrings: one page per package, written into ``api/``
here at every build, so a new module appears without editing anything. The command-line reference comes from
the ``dtlive`` argument parser, the message contracts from the JSON Schema files the package ships.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS / "_ext"), str(ROOT / "scripts")]

import repository  # noqa: E402  (scripts/repository.py: the repository's address and Binder links)

import dtlive  # noqa: E402

project = "dtlive"
author = "the dtlive developers"
copyright = "the dtlive developers"
release = version = dtlive.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "sphinx_copybutton",
    "dtlive_docs",
]

suppress_warnings = ["image.nonlocal_uri"]  # the Binder badge is an image on mybinder.org
exclude_patterns = ["_build", "jupyter_execute", "**/.ipynb_checkpoints", "_ext"]
myst_enable_extensions = ["colon_fence", "deflist", "substitution"]
myst_heading_anchors = 3
smartquotes = False  # command-line flags (--flag) and quotes stay as typed

# Notebooks: executed at build time when DTLIVE_DOCS_EXECUTE=force (scripts/docs.sh does, with a stack of their
# own), else shown as committed (without outputs). A notebook that fails fails the build.
nb_execution_mode = os.environ.get("DTLIVE_DOCS_EXECUTE", "off")
nb_execution_timeout = 240
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# API reference from the docstrings (numpydoc-style sections, reStructuredText roles)
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}
autodoc_inherit_docstrings = False  # a base class of another library (SQLAlchemy) keeps its docstrings to itself
napoleon_google_docstring = False
napoleon_numpy_docstring = True
autosummary_generate = False

REPOSITORY, REPOSITORY_SOURCE = repository.repository_url(ROOT)
BINDER_URL = repository.binder_url(REPOSITORY)

html_theme = "pydata_sphinx_theme"
html_title = f"dtlive {release}"
html_static_path: list[str] = []
html_theme_options = {
    "icon_links": [
        {"name": "Source", "url": REPOSITORY, "icon": "fa-brands fa-github"},
        {"name": "Launch on Binder", "url": BINDER_URL,
         "icon": "https://mybinder.org/badge_logo.svg", "type": "url"},
    ],
    "navigation_with_keys": False,
    "header_links_before_dropdown": 5,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
myst_substitutions = {  # {{ binder_badge }}, {{ repository }} in the pages
    "binder_badge": f"[![Launch on Binder]({repository.BADGE_LOGO})]({BINDER_URL})",
    "repository": f"[{REPOSITORY.removeprefix('https://')}]({REPOSITORY})",
}

# The API pages: one per package of dtlive, every module of it documented from its docstrings.
LEFT_OUT = ("dtlive/__main__.py", "dtlive/storage/migrations/")  # an entry point; Alembic's revisions


def api_modules(package_root: Path = ROOT / "dtlive") -> dict[str, list[str]]:
    """``package -> [its modules]`` for every package of dtlive, modules and packages in file order."""
    out: dict[str, list[str]] = {}
    for path in sorted(package_root.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(LEFT_OUT) or "__pycache__" in rel:
            continue
        dotted = rel.removesuffix(".py").replace("/", ".")
        if dotted.endswith(".__init__"):
            out.setdefault(dotted.removesuffix(".__init__"), [])
        else:
            out.setdefault(dotted.rpartition(".")[0], []).append(dotted)
    return out


def write_api_pages(target: Path = DOCS / "api") -> list[str]:
    """Write ``api/<package>.md`` for every package (old generated pages removed first); their names."""
    target.mkdir(exist_ok=True)
    for old in target.glob("dtlive*.md"):
        old.unlink()
    names = []
    for package, modules in api_modules().items():
        lines = [f"# `{package}`", "", "```{eval-rst}"]
        for module in (package, *modules):  # each name where it is defined: re-exports (``__all__``) left out
            lines += [f".. automodule:: {module}", "   :ignore-module-all:", ""]
        lines += ["```", ""]
        (target / f"{package}.md").write_text("\n".join(lines))
        names.append(package)
    return names


API_PAGES = write_api_pages()
