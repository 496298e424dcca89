"""dtlive: live data-quality monitoring of a drift-tube muon telescope, from Jupyter.

>>> import dtlive
>>> dtlive.__version__ != ""
True
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dtlive")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from dtlive.messages import to_dataset  # noqa: E402

__all__ = ["__version__", "to_dataset"]
