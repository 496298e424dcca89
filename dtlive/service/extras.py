"""The optional parts of dtlive and the one line that names the extra to install when one is missing.

``pip install dtlive`` installs the core: the streamz nodes, decoding, the products, the processor, the embedded
broker, ``dtlive emulate``, ``results``, ``status`` and ``alerts send``. The rest comes with extras (pyproject.toml,
``[project.optional-dependencies]``): ``dashboard`` (ipywidgets, bqplot, Voilà, JupyterLab), ``ledger`` (the run
ledger, the history store and the recorder: SQLAlchemy, Alembic, psycopg, pyarrow), ``alerts`` (the alert
listener and its analyses: the ledger's packages and papermill), ``dask`` (``process --dask``, ``replay --dask``),
``hub`` (JupyterHub) and ``all``. :data:`EXTRAS` lists the modules each extra brings;
:func:`extra` wraps a module's imports of them, :func:`require` checks them before a command starts, and both
raise :class:`MissingExtra`, whose message is the one line to act on.

>>> missing("ledger")                    # everything is installed here
[]
>>> with extra("dashboard", "dtlive.ui.widgets"):
...     import ipywidgets  # noqa: F401
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

EXTRAS: dict[str, tuple[str, ...]] = {
    "dashboard": ("ipywidgets", "bqplot", "ipykernel", "voila"),
    "ledger": ("sqlalchemy", "alembic", "pyarrow"),  # psycopg too, imported only for a PostgreSQL URL
    "alerts": ("sqlalchemy", "alembic", "pyarrow", "papermill", "nbformat"),
    "dask": ("dask", "distributed"),
    "hub": ("jupyterhub", "jupyterhub_idle_culler"),
}
"""Extra -> the top-level modules dtlive imports from what it installs (pyproject.toml names the distributions)."""


class MissingExtra(ModuleNotFoundError):
    """A feature was used whose extra is not installed; ``str()`` is the one line that says what to install.

    It is a ``ModuleNotFoundError`` (``name``: the first missing module), so code that falls back on a missing
    optional module keeps doing so.

    >>> err = MissingExtra("ledger", "dtlive.storage.ledger", ["sqlalchemy", "alembic"])
    >>> print(err)
    dtlive.storage.ledger needs the 'ledger' extra: pip install 'dtlive[ledger]' (not installed: sqlalchemy, alembic)
    >>> print(err.needed_by("dtlive runs"))
    dtlive runs needs the 'ledger' extra: pip install 'dtlive[ledger]' (not installed: sqlalchemy, alembic)
    """

    def __init__(self, extra_name: str, what: str, modules: list[str]):
        self.extra = extra_name
        self.what = what
        self.modules = list(modules)
        super().__init__(self.needed_by(what), name=self.modules[0] if self.modules else None)

    def needed_by(self, what: str) -> str:
        """The message with ``what`` (a command, a module) as the one that needs the extra."""
        return (f"{what} needs the '{self.extra}' extra: pip install 'dtlive[{self.extra}]'"
                f" (not installed: {', '.join(self.modules)})")


def _modules(extra_name: str, modules: tuple[str, ...]) -> tuple[str, ...]:
    if extra_name not in EXTRAS:
        raise KeyError(f"unknown extra {extra_name!r}; known: {', '.join(EXTRAS)}")
    unknown = set(modules) - set(EXTRAS[extra_name])
    if unknown:
        raise KeyError(f"{sorted(unknown)} are not modules of the {extra_name!r} extra")
    return modules or EXTRAS[extra_name]


def missing(extra_name: str, *modules: str) -> list[str]:
    """The modules of ``extra_name`` (all, or those given) that are not installed, in the table's order.

    Finds them without importing them.

    >>> missing("dask"), missing("dashboard", "ipywidgets", "bqplot")
    ([], [])
    """
    return [m for m in _modules(extra_name, modules) if importlib.util.find_spec(m) is None]


def require(extra_name: str, what: str, *modules: str) -> None:
    """Raise :class:`MissingExtra` unless the modules of ``extra_name`` (all, or those given) are installed.

    ``what``: the feature that needs them, as the user knows it (``"dtlive dashboard"``).

    >>> require("dashboard", "dtlive dashboard")     # installed: nothing happens
    """
    absent = missing(extra_name, *modules)
    if absent:
        raise MissingExtra(extra_name, what, absent)


@contextlib.contextmanager
def extra(extra_name: str, what: str) -> Iterator[None]:
    """Imports of ``extra_name``'s modules: one that is not installed raises :class:`MissingExtra` naming the extra.

    Costs nothing when they are installed (the imports run as they are). Other import errors pass unchanged.

    >>> with extra("ledger", "dtlive.storage.history"):
    ...     import pyarrow  # noqa: F401
    """
    names = set(_modules(extra_name, ()))
    try:
        yield
    except MissingExtra:
        raise
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top not in names:
            raise
        absent = missing(extra_name)  # in the table's order
        raise MissingExtra(extra_name, what, absent if top in absent else [top, *absent]) from None
