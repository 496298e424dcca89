"""Analysis artifacts: one directory per attempt, every file complete when it appears.

Two attempts of the same analysis for the same alert (run at the same time, in worker processes, as the
listener runs them) give two distinct complete NetCDF files; a reader polling the directory meanwhile
opens every ``.nc`` file it sees and never meets a partial one.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest
import xarray as xr
from alert_history import N_WIN, alert, window_message

from dtlive.alerts.jobs import run_job
from dtlive.alerts.notices import alert_to_dict
from dtlive.storage.history import HistoryStore
from dtlive.storage.ledger import Ledger


@pytest.mark.slow
def test_two_attempts_two_complete_files_and_no_partial_read(tmp_path):
    history = HistoryStore(tmp_path / "history")
    msgs = [window_message(w) for w in range(N_WIN)]
    for i in range(0, N_WIN, 60):
        history.append(msgs[i:i + 60])
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    Ledger(ledger_url).close()
    out = tmp_path / "artifacts" / "IceCube_42" / "1-snapshot"  # what the listener gives every attempt of a job
    args = ("snapshot", alert_to_dict(alert()), {"before_s": 300.0, "after_s": 30.0}, str(history.path), ledger_url,
            str(out))

    seen: dict[str, int] = {}
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:  # opens every .nc file as soon as it is there
        while not stop.is_set():
            for path in out.rglob("*.nc"):
                try:
                    with xr.open_dataset(path, engine="h5netcdf") as ds:
                        seen[str(path)] = int(ds.sizes["time"])
                except Exception as exc:  # noqa: BLE001 - a partial file, reported below
                    errors.append(f"{path}: {exc!r}")
            time.sleep(0.002)

    watcher = threading.Thread(target=reader, daemon=True)
    watcher.start()
    try:
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            results = [f.result(timeout=300) for f in [pool.submit(run_job, *args) for _ in range(2)]]
        deadline = time.monotonic() + 10  # the reader has opened all four files at least once
        while len(seen) < 4 and time.monotonic() < deadline and not errors:
            time.sleep(0.01)
    finally:
        stop.set()
        watcher.join(10)

    assert not errors, errors[:3]
    a, b = results
    assert a["attempt"] != b["attempt"]
    files_a, files_b = set(a["artifacts"]), set(b["artifacts"])
    assert len(files_a) == 2 and not files_a & files_b, (files_a, files_b)  # snapshot file + the Dataset, per attempt
    expected = a["summary"]["windows"]
    assert expected > 100 and b["summary"]["windows"] == expected
    for r in results:
        for path in r["artifacts"]:
            assert path.startswith(str(out / r["attempt"]) + "/"), path
            with xr.open_dataset(path, engine="h5netcdf") as ds:
                assert int(ds.sizes["time"]) == expected
                assert int(ds.total_hits.sum()) == r["summary"]["total_hits"]
                assert json.loads(ds.attrs["provenance"])
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        ["IceCube_42-r1-snapshot.nc", "snapshot.nc"] * 2), "a temporary file was left"
    assert set(seen) == files_a | files_b and all(n == expected for n in seen.values()), seen
    # the two attempts' data are the same numbers, in two files
    with xr.open_dataset(sorted(files_a)[0], engine="h5netcdf") as x, \
            xr.open_dataset(sorted(files_b)[0], engine="h5netcdf") as y:
        assert np.array_equal(x.total_hits.values, y.total_hits.values)
