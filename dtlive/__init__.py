"""dtlive: live data-quality monitoring of a drift-tube muon telescope, from Jupyter.

The public API, by layer (each name is imported when first used, so ``import dtlive`` stays light: no Kafka
client, streamz, database or widget library is loaded before a name that needs it is asked for):

* detector and physics core: :class:`Rows`, :func:`clean`, :func:`read_csv`, :func:`compute_products`,
  :data:`REGISTRY` (the window products), :class:`EventTimeWindows`, :class:`WindowBook`, :class:`Window`,
  :class:`Checkpoint`, :func:`to_dataset`, :func:`decode_message`, :class:`Config`, :func:`load_config`;
* streaming: :func:`window_graph`, :class:`Processor`;
* storage: :class:`Ledger`, :class:`HistoryStore` (the ``ledger`` extra);
* ui and deployment: :class:`Dashboard` (the ``dashboard`` extra), :func:`ensure_stack`, :func:`stop_stack`.

A name whose extra is not installed raises :class:`dtlive.service.extras.MissingExtra`, naming the extra to install.

>>> import dtlive
>>> hits = dtlive.Rows.from_columns(head=[2, 2], fpga=[0, 1], channel=[3, 3], orbit=[7, 7], bx=[0, 0], tdc=[0, 0])
>>> ds = dtlive.compute_products(hits)
>>> int(ds.total_hits), ds.hits_per_chamber.dims
(2, ('chamber',))
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dtlive")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_API = {
    "Rows": "dtlive.core.rows",
    "clean": "dtlive.core.rows",
    "read_csv": "dtlive.core.decode",
    "compute_products": "dtlive.core.products",
    "REGISTRY": "dtlive.core.products",
    "EventTimeWindows": "dtlive.core.windows",
    "WindowBook": "dtlive.core.windows",
    "Window": "dtlive.core.windows",
    "Checkpoint": "dtlive.core.checkpoint",
    "to_dataset": "dtlive.core.messages",
    "decode_message": "dtlive.core.messages",
    "Config": "dtlive.config",
    "load_config": "dtlive.config",
    "window_graph": "dtlive.streaming.graph",
    "Processor": "dtlive.streaming.processor",
    "Ledger": "dtlive.storage.ledger",
    "HistoryStore": "dtlive.storage.history",
    "Dashboard": "dtlive.ui.widgets",
    "ensure_stack": "dtlive.deploy.stack",
    "stop_stack": "dtlive.deploy.stack",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # asked once
        return value
    raise AttributeError(f"module 'dtlive' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
