"""The curated public API of ``dtlive``: every name resolves, carries a docstring with an example, and importing
the package loads none of the heavy libraries a name may need."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import dtlive


@pytest.mark.parametrize("name", [n for n in dtlive.__all__ if n != "__version__"])
def test_every_public_name_resolves_and_has_an_example(name):
    obj = getattr(dtlive, name)
    doc = inspect.getdoc(obj) if (inspect.isclass(obj) or callable(obj)) else inspect.getdoc(type(obj))
    assert doc and ">>>" in doc, f"{name}: no docstring with an example"


def test_importing_dtlive_loads_no_kafka_streamz_database_or_widgets():
    code = ("import sys, dtlive; heavy = {'confluent_kafka', 'streamz', 'sqlalchemy', 'ipywidgets', 'bqplot', "
            "'distributed', 'xarray'}; print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        dtlive.nothing_here  # noqa: B018


def test_the_processor_command_loads_only_what_processing_needs():
    """``dtlive process`` starts in about a second: the command line and the processor import no pandas (csv
    parsing imports it on first use), xarray, SQLAlchemy (the ledger opens in the background), widgets, numba (the
    reconstruction's compiled loops load with the first window), and streamz comes without dask and
    dask.distributed."""
    code = ("import sys; from dtlive.deploy import cli; cli._streamz_without_dask(); "
            "import dtlive.streaming.processor, streamz; "
            "heavy = {'pandas', 'xarray', 'sqlalchemy', 'alembic', 'ipywidgets', 'bqplot', 'distributed', 'dask', "
            "'scipy', 'numba'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
    # afterwards, a Dask import works as usual
    code = ("from dtlive.deploy import cli; cli._streamz_without_dask(); import distributed, dask.utils; "
            "print(distributed.Client, dask.utils.apply)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "distributed.client.Client" in out.stdout and "function apply" in out.stdout
