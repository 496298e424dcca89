"""``dtlive export`` (dtlive.storage.export): the history store's windows of a range, written as NetCDF, Zarr and
Parquet, read back equal to what HistoryStore.load gives; clear one-line errors."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from datafiles import RUN_CSV
from monitor_messages import T0, message

from dtlive.core import detector as det
from dtlive.core.decode import read_csv
from dtlive.core.messages import decode_message
from dtlive.core.rows import clean
from dtlive.core.windows import EventTimeWindows
from dtlive.deploy.cli import build_parser, main
from dtlive.storage import export as export_module
from dtlive.storage.export import FORMATS, ExportError, export
from dtlive.storage.history import HistoryStore
from dtlive.streaming.nodes import window_message

START, END = T0 + 2 * 3, T0 + 2 * 15  # windows 3 .. 14 of the 20 stored


@pytest.fixture
def store(tmp_path) -> HistoryStore:
    """20 windows of two processors' worth of results, some with rejected rows."""
    s = HistoryStore(tmp_path / "history")
    s.append([message(i, 5 + i, chamber_channel=3 + 64 * (i % 2), rejected={"late": i} if i % 3 == 0 else {},
                      processor="proc-a") for i in range(20)])
    return s


def test_netcdf_reads_back_as_the_loaded_windows(store, tmp_path):
    done = export(store, START, END, "netcdf", tmp_path / "w.nc")
    expected = store.load(START, END)
    back = xr.open_dataset(tmp_path / "w.nc", engine="h5netcdf").load()
    xr.testing.assert_equal(back, expected)
    assert done.windows == expected.sizes["time"] == 12 and done.bytes == (tmp_path / "w.nc").stat().st_size
    assert back.attrs["history_store"] == str(store.path) and back.attrs["schema"] == "dtlive.monitor/1"
    assert done.first_start == "2023-11-14T22:13:26.000Z"  # T0 + 6 s
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_zarr_reads_back_as_the_loaded_windows(store, tmp_path):
    pytest.importorskip("zarr", reason="zarr is not installed")
    done = export(store, START, END, "zarr", tmp_path / "w.zarr")
    back = xr.open_zarr(tmp_path / "w.zarr").load()
    xr.testing.assert_equal(back, store.load(START, END))
    files = [p for p in (tmp_path / "w.zarr").rglob("*") if p.is_file()]
    assert done.bytes == sum(p.stat().st_size for p in files) > 0
    # replaced as a whole with --overwrite: a narrower range leaves nothing of the old store behind
    export(store, START, START + 4, "zarr", tmp_path / "w.zarr", overwrite=True)
    assert xr.open_zarr(tmp_path / "w.zarr").sizes["time"] == 2


def test_parquet_is_one_row_per_window_with_scalars_and_per_chamber_counts(store, tmp_path):
    done = export(store, START, END, "parquet", tmp_path / "w.parquet")
    table = pd.read_parquet(tmp_path / "w.parquet")
    ds = store.load(START, END)
    assert len(table) == done.windows == ds.sizes["time"]
    assert table.window_id.tolist() == ds.window_id.values.tolist()
    assert (table.start.dt.tz_convert(None).to_numpy() == ds.time.values).all()
    assert (table.end.dt.tz_convert(None).to_numpy() == ds.window_end.values).all()
    for k in ("first_orbit", "last_orbit", "total_hits", "rows", "ancillary", "special_channel_hits", "late_hits",
              "rejected", "events", "events_with_trigger"):
        assert table[k].tolist() == ds[k].values.tolist(), k
    for c in range(det.N_CHAMBERS):
        assert table[f"hits_chamber_{c}"].tolist() == ds.hits_per_chamber.values[:, c].tolist()
        assert table[f"drift_time_ns_overflow_chamber_{c}"].tolist() == ds.drift_time_ns_overflow.values[:, c].tolist()
        assert table[f"event_hits_chamber_{c}"].tolist() == ds.event_hits_per_chamber.values[:, c].tolist()
    assert table.rejected_late.tolist() == ds.rejected_by_reason.sel(reason="late").values.tolist()
    assert table.rejected_late.sum() == sum(i for i in range(3, 15) if i % 3 == 0)
    assert set(table.processor) == {"proc-a"}
    assert json.loads(table.provenance[0]) == {"processor": "proc-a"}
    assert table[[f"hits_chamber_{c}" for c in range(4)]].sum(axis=1).tolist() == table.total_hits.tolist()


def test_real_run_windows_export_and_read_back(tmp_path):
    if not RUN_CSV.is_file():
        pytest.skip(f"real run data not available at {RUN_CSV}")
    hits, _ = clean(read_csv(str(RUN_CSV)))
    w = EventTimeWindows.from_seconds(2.0, 0.5)
    windows = (w.add(hits)[0] + w.flush())[:40]
    for win in windows:
        win.meta = {"orbit_epoch": 1.7e9}
    store = HistoryStore(tmp_path / "history")
    store.append([decode_message(window_message(win, provenance={"processor": "p"})) for win in windows])
    for fmt, name in (("netcdf", "run.nc"), ("parquet", "run.parquet")):
        assert export(store, None, None, fmt, tmp_path / name).windows == len(windows)
    ds = store.load()
    xr.testing.assert_equal(xr.open_dataset(tmp_path / "run.nc", engine="h5netcdf").load(), ds)
    table = pd.read_parquet(tmp_path / "run.parquet")
    assert table.total_hits.sum() == int(ds.total_hits.sum()) == sum(len(win.hits) for win in windows)


def test_cli_writes_and_prints_windows_and_bytes(store, tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    code = main(["export", "--history", str(store.path), "--start", "2023-11-14T22:13:26Z", "--end", str(END),
                 "--format", "parquet", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and out.is_file()
    assert captured.err.startswith(f"writing 12 windows from {store.path} as parquet")
    size = out.stat().st_size
    assert captured.out.strip().startswith("exported 12 windows (starts 2023-11-14T22:13:26.000Z")
    assert f"{size / 1e3:.1f} kB" in captured.out
    assert build_parser().parse_args(["export", "--format", "zarr", "--output", "x"]).export_format in FORMATS
    choices = next(a for a in build_parser()._subparsers._group_actions[0].choices["export"]._actions
                   if a.dest == "export_format").choices
    assert tuple(choices) == FORMATS


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(["export", *argv])
    err = capsys.readouterr().err.strip()
    return code, err


def test_clear_errors(store, tmp_path, capsys, monkeypatch):
    history = ["--history", str(store.path)]
    code, err = run_cli(capsys, *history, "--start", str(T0 + 1000), "--format", "netcdf", "--output",
                        str(tmp_path / "x.nc"))
    assert code == 1 and err.startswith("dtlive export: error: no windows in the history store")
    assert "2023-11-14T22:30:00.000Z" in err and len(err.splitlines()) == 1 and not (tmp_path / "x.nc").exists()
    code, err = run_cli(capsys, *history, "--format", "netcdf", "--output", str(tmp_path / "nowhere" / "x.nc"))
    assert code == 1 and "directory" in err and "does not exist" in err
    code, err = run_cli(capsys, *history, "--start", "noon", "--format", "netcdf", "--output", str(tmp_path / "x"))
    assert code == 1 and "--start 'noon' is neither UNIX seconds nor an ISO 8601 UTC time" in err
    code, err = run_cli(capsys, *history, "--start", str(END), "--end", str(START), "--format", "parquet",
                        "--output", str(tmp_path / "x"))
    assert code == 1 and "empty range" in err
    with pytest.raises(SystemExit) as exc:
        main(["export", *history, "--format", "csv", "--output", str(tmp_path / "x.csv")])
    assert exc.value.code == 2 and "invalid choice: 'csv'" in capsys.readouterr().err
    with pytest.raises(ExportError, match="unknown format 'csv'; choose one of parquet, netcdf, zarr"):
        export(store, None, None, "csv", tmp_path / "x.csv")
    # an existing output is kept unless --overwrite
    (tmp_path / "old.nc").write_bytes(b"old")
    code, err = run_cli(capsys, *history, "--format", "netcdf", "--output", str(tmp_path / "old.nc"))
    assert code == 1 and "exists; give --overwrite" in err and (tmp_path / "old.nc").read_bytes() == b"old"
    assert main(["export", *history, "--format", "netcdf", "--output", str(tmp_path / "old.nc"), "--overwrite"]) == 0
    assert xr.open_dataset(tmp_path / "old.nc", engine="h5netcdf").sizes["time"] == 20
    capsys.readouterr()
    # zarr without the zarr package: one line naming what to install
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(export_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "zarr" else real_find_spec(name, *a))
    code, err = run_cli(capsys, *history, "--format", "zarr", "--output", str(tmp_path / "x.zarr"))
    assert code == 1 and err == "dtlive export: error: the zarr format needs the zarr package: pip install 'zarr>=2.18'"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_unwritable_directory_is_a_clear_error(store, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ExportError, match="directory .*locked is not writable"):
            export(store, None, None, "parquet", locked / "x.parquet")
    finally:
        locked.chmod(0o700)


def test_writing_fails_cleanly_leaving_no_partial_file(store, tmp_path, monkeypatch):
    def disk_full(self, path, **kw):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", disk_full)
    with pytest.raises(ExportError, match="cannot write .*w.nc: No space left on device"):
        export(store, None, None, "netcdf", tmp_path / "w.nc")
    assert list(tmp_path.iterdir()) == [store.path]
    assert np.isfinite(store.load().total_hits.values).all()  # the store itself untouched
