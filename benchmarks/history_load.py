"""History store: append throughput, size on disk and load time of a day of 2 s windows, per layout.

    .venv/bin/python -m benchmarks.history_load             # a day: 43,200 windows (~4 min)
    .venv/bin/python -m benchmarks.history_load --hours 2   # quicker look

Data: the per-window mean of every product is taken from 20 s of the cosmic-muon simulator
(``dtlive.core.simulate``, 3 noisy channels, scintillator, ~5 kHz) cut into real 2 s windows; the day's
windows are Poisson draws around those means (running the simulator for a day would take hours and
measure the simulator). Windows become ``dtlive.monitor/1`` message dicts just before each append, as a
service that consumes ``dt.monitor`` would hand them over, and are appended 30 at a time (a minute).

Layouts compared (same messages, same ``load`` contract: the Dataset of ``dtlive.core.messages.to_dataset``):

* ``arrow-hourly``: :class:`dtlive.storage.history.HistoryStore` as shipped: Arrow IPC (Feather v2, zstd) files, one
  per append, compacted by hour;
* ``arrow-parts``: the same files never compacted (1,440 files a day);
* ``parquet-hourly``: the shipped store writing Parquet (zstd) instead of Arrow IPC, compacted by hour;
* ``zarr-append``: one Zarr store through xarray, ``to_zarr(append_dim="time")`` per append (chunk = one
  append); idempotence needs the stored keys, read before each append. Only the first ``--zarr-timed``
  appends are timed one by one; the rest of the day is written an hour per call with the same chunking
  (same files on disk), because appending it all one by one takes minutes.

Measured: append time per call (median, p99, windows/s), bytes and files on disk, ``load()`` of the full
day and of one hour (median of ``--repeats`` wall and CPU seconds, each from a new store object; the page
cache is warm, which is the normal case for a monitoring host reading what it wrote). The load average
is recorded before and after: on a busy machine compare the CPU seconds.
Results: ``benchmarks/results/history_load.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.checks import count_check, verdict
from dtlive.config import Config
from dtlive.core import detector as det
from dtlive.core.messages import decode_message, encode_message, iso_utc
from dtlive.core.rows import clean
from dtlive.core.simulate import simulate
from dtlive.core.windows import EventTimeWindows
from dtlive.storage.history import HistoryStore, columns_dataset, first_copies_sorted, window_columns
from dtlive.streaming.nodes import window_dataset

RESULTS = Path(__file__).resolve().parent / "results" / "history_load.json"
T0 = 1_700_000_000.0  # UNIX seconds of the first window (aligned to an hour)
WINDOW_S = 2.0
DAY_WINDOWS = 43_200  # the target's day of 2 s windows
BATCH = 30


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- data


def template(seconds: float = 20.0) -> tuple[dict, dict]:
    """A real simulated window (message dict) and the per-window mean of every product."""
    hits, ancillary = clean(simulate(seconds, seed=3))
    w = EventTimeWindows.from_seconds(WINDOW_S, 0.5)
    closed = w.add(hits)[0] + w.flush()
    msgs = []
    for win in closed[1:-1]:  # full windows only
        win.meta = {"orbit_epoch": T0, "counts": {"rows": len(win.hits)}}
        msgs.append(decode_message(encode_message(window_dataset(win, provenance={"processor": "bench"}))))
    hist = msgs[0]["histograms"]
    means = {}
    for name in ("channel_occupancy", "active_channels_per_orbit", "scint_channel_occupancy", "drift_time_ns"):
        means[name] = np.mean([[m["histograms"][name][f"chamber_{c}"]["bin_counts"] for c in range(det.N_CHAMBERS)]
                               for m in msgs], axis=0)
    means["special"] = np.mean([m["counts"]["special_channel_hits"] for m in msgs])
    drift = [[m["histograms"]["drift_time_ns"][f"chamber_{c}"] for c in range(det.N_CHAMBERS)] for m in msgs]
    means["under"] = np.mean([[d["underflow"] for d in per] for per in drift], axis=0)
    means["over"] = np.mean([[d["overflow"] for d in per] for per in drift], axis=0)
    log(f"template: {len(msgs)} simulated windows, {np.mean([m['total_hits'] for m in msgs]):.0f} hits/window, "
        f"{len(hist['drift_time_ns']['chamber_0']['bin_counts'])} drift bins")
    return msgs[0], means


def draw(means: dict, n: int, seed: int) -> dict[str, np.ndarray]:
    """Poisson counts of ``n`` windows around the template means (vectorised)."""
    rng = np.random.default_rng(seed)
    out = {k: rng.poisson(np.broadcast_to(v, (n, *np.shape(v)))) for k, v in means.items()}
    out["hits_per_chamber"] = out["channel_occupancy"].sum(axis=2)
    out["total_hits"] = out["hits_per_chamber"].sum(axis=1) + out["special"]
    return out


def messages(tmpl: dict, counts: dict, first: int, n: int) -> list[dict]:
    """Message dicts of windows ``first .. first + n - 1`` (what a dt.monitor consumer hands over)."""
    out = []
    orbits = det.orbits_for_seconds(WINDOW_S)
    for j in range(n):
        i = first + j
        h = tmpl["histograms"]
        hist = {}
        for name in ("channel_occupancy", "active_channels_per_orbit", "scint_channel_occupancy", "drift_time_ns"):
            per = {}
            for c in range(det.N_CHAMBERS):
                entry = {"bin_edges": h[name][f"chamber_{c}"]["bin_edges"],
                         "bin_counts": counts[name][i, c].tolist()}
                if name == "drift_time_ns":
                    entry["underflow"] = int(counts["under"][i, c])
                    entry["overflow"] = int(counts["over"][i, c])
                per[f"chamber_{c}"] = entry
            hist[name] = per
        total = int(counts["total_hits"][i])
        out.append({
            "schema": tmpl["schema"],
            "window": {"id": i, "first_orbit": i * orbits, "last_orbit": (i + 1) * orbits - 1,
                       "start": iso_utc(T0 + WINDOW_S * i), "end": iso_utc(T0 + WINDOW_S * (i + 1))},
            "provenance": {"inputs": [{"topic": Config.hits_topic, "partition": 0, "first_offset": 5000 * i,
                                       "last_offset": 5000 * i + total - 1}],
                           "dtlive_version": "bench", "config_hash": "0123abcd", "run_id": "bench-run",
                           "processor": Config.group_id, "orbit_epoch": T0},
            "total_hits": total,
            "hits_per_chamber": counts["hits_per_chamber"][i].tolist(),
            "counts": {"rows": total, "rejected": {"late": 1} if i % 97 == 0 else {}, "ancillary": 0,
                       "special_channel_hits": int(counts["special"][i]), "late_hits": int(i % 97 == 0)},
            "histograms": hist,
        })
    return out


# ---------------------------------------------------------------------- layouts


class PartsStore(HistoryStore):
    """The shipped store without compaction: every append stays a file."""

    def _after_append(self, newest: int) -> None:
        return None


class ParquetStore(HistoryStore):
    """The shipped store with Parquet files instead of Arrow IPC."""

    file_format = "parquet"


STORES = {"arrow-hourly": HistoryStore, "arrow-parts": PartsStore, "parquet-hourly": ParquetStore}


class ZarrStore:
    """The same columns in one Zarr store through xarray, appended along ``time``."""

    def __init__(self, path: Path):
        self.path = path

    @staticmethod
    def _frame(cols: dict):
        import xarray as xr

        data = {}
        for k, v in cols.items():
            if k == "drift_time_ns":
                v = np.stack(list(v)) if v.dtype == object else v.reshape(len(v), -1)
            v = np.asarray(v)
            if v.dtype == object:
                data[k] = ("time", v.astype(object))
            elif v.ndim == 1:
                data[k] = ("time", v)
            else:
                flat = v.reshape(len(v), -1).astype(np.int32)
                data[k] = (("time", f"{k}_bin"), flat)
        return xr.Dataset(data)

    def append(self, msgs: list[dict], timed_keys: bool = True) -> int:
        cols = window_columns(msgs)
        if self.path.exists() and timed_keys:  # idempotence: the stored keys
            import xarray as xr

            with xr.open_zarr(self.path, consolidated=False) as old:
                keys = set(zip(old["processor"].values.tolist(), old["window_id"].values.tolist()))
            fresh = np.array([(p, int(w)) not in keys for p, w in zip(cols["processor"], cols["window_id"])])
            cols = {k: v[fresh] for k, v in cols.items()}
        if not len(cols["window_id"]):
            return 0
        ds = self._frame(cols)
        if self.path.exists():
            ds.to_zarr(self.path, append_dim="time", consolidated=False)
        else:
            enc = {k: {"chunks": (BATCH, *ds[k].shape[1:])} for k in ds.data_vars}
            ds.to_zarr(self.path, encoding=enc, consolidated=False)
        return len(cols["window_id"])

    def load(self, start: float | None = None, end: float | None = None):
        import xarray as xr

        with xr.open_zarr(self.path, consolidated=False) as z:
            start_ms = z["start_ms"].values
            sel = np.ones(len(start_ms), bool)
            if start is not None:
                sel &= start_ms >= start * 1000
            if end is not None:
                sel &= start_ms < end * 1000
            idx = np.flatnonzero(sel)
            part = z.isel(time=slice(idx.min(), idx.max() + 1)).load() if len(idx) else None
        if part is None:
            return None
        cols = {}
        nc, nch = det.N_CHAMBERS, det.CHANNELS_PER_CHAMBER
        shapes = {"hits_per_chamber": (nc,), "channel_occupancy": (nc, nch), "active_channels_per_orbit": (nc, nch),
                  "scint_channel_occupancy": (nc, nch), "drift_time_ns_underflow": (nc,),
                  "drift_time_ns_overflow": (nc,), "drift_time_ns": (nc, -1)}
        for k in part.data_vars:
            v = part[k].values
            if k in shapes:
                v = v.astype(np.int64).reshape(len(v), *shapes[k])
            elif v.dtype.kind in "UOT":
                v = v.astype(object)
            cols[k] = v
        return columns_dataset(first_copies_sorted(cols))


# ---------------------------------------------------------------------- measurement


def disk(path: Path) -> tuple[int, int]:
    size = files = 0
    for root, _, names in os.walk(path):
        for n in names:
            size += os.path.getsize(os.path.join(root, n))
            files += 1
    return size, files


def timed_load(make, repeats: int, **kw) -> tuple[list[float], list[float], int, int]:
    """Wall and CPU seconds of each load (the first one also pays for fresh memory pages); windows and hits
    of the last load."""
    times, cpu, n, hits = [], [], 0, 0
    for _ in range(repeats):
        store = make()
        t, c = time.perf_counter(), time.process_time()
        ds = store.load(**kw)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        n = 0 if ds is None else ds.sizes["time"]
        hits = 0 if ds is None else int(ds.total_hits.sum())
        del ds
    return times, cpu, n, hits


def run_layout(name: str, root: Path, tmpl: dict, counts: dict, n_windows: int, repeats: int,
               zarr_timed: int) -> dict:
    path = root / name
    if name == "zarr-append":
        store = ZarrStore(path)

        def make():
            return ZarrStore(path)
    else:
        cls = STORES[name]
        store = cls(path)

        def make():
            return cls(path)

    append_s, gen_s = [], 0.0
    t_all = time.perf_counter()
    first = 0
    while first < n_windows:
        if name == "zarr-append" and first >= zarr_timed * BATCH:  # the rest an hour per call, same chunks
            n = min(1800, n_windows - first)
            store.append(messages(tmpl, counts, first, n), timed_keys=False)
            first += n
            continue
        t = time.perf_counter()
        batch = messages(tmpl, counts, first, min(BATCH, n_windows - first))
        gen_s += time.perf_counter() - t
        t = time.perf_counter()
        store.append(batch)
        append_s.append(time.perf_counter() - t)
        first += BATCH
    fill_s = time.perf_counter() - t_all
    size, files = disk(path)
    hour_start = T0 + 3600 * (n_windows * WINDOW_S // 3600 // 2)  # an hour in the middle
    day_s, day_cpu, n_day, hits_day = timed_load(make, repeats)
    hour_s, hour_cpu, n_hour, _ = timed_load(make, repeats, start=hour_start, end=hour_start + 3600)
    a = np.array(append_s)
    # the whole store must give back every window and every hit that was drawn for it (the input)
    checks = [count_check(n_windows, n_day, "windows"), count_check(int(counts["total_hits"].sum()), hits_day)]
    day_met = bool(np.median(day_s) < 1.0) if n_windows == DAY_WINDOWS else None
    res = {
        "layout": name,
        "windows": n_windows,
        "appends_timed": len(a),
        "append_ms_median": round(float(np.median(a)) * 1e3, 2),
        "append_ms_p99": round(float(np.percentile(a, 99)) * 1e3, 2),
        "append_windows_per_s": round(BATCH / float(np.median(a)), 0),
        "message_build_ms_per_batch": round(gen_s / max(len(a), 1) * 1e3, 2),
        "fill_s": round(fill_s, 1),
        "disk_mb": round(size / 1e6, 1),
        "disk_bytes_per_window": round(size / n_windows, 0),
        "files": files,
        "load_all_s": round(float(np.median(day_s)), 3),
        "load_all_cpu_s": round(float(np.median(day_cpu)), 3),
        "load_all_runs_s": [round(x, 3) for x in day_s],
        "load_all_windows": n_day,
        "load_hour_s": round(float(np.median(hour_s)), 4),
        "load_hour_cpu_s": round(float(np.median(hour_cpu)), 4),
        "load_hour_windows": n_hour,
        "load_all_hits": hits_day,
        "counts": checks,
        "verdict": verdict(day_met, checks)[1],
    }
    log(json.dumps(res))
    return res


def check_equal(root: Path, tmpl: dict, counts: dict, layouts: list[str]) -> bool:
    """The stores give back what to_dataset makes of the same messages (first hour)."""
    import xarray as xr

    from dtlive.core.messages import to_dataset

    ref = to_dataset(messages(tmpl, counts, 0, min(1800, len(counts["total_hits"]))))
    ok = True
    for name in layouts:
        store = ZarrStore(root / name) if name == "zarr-append" else STORES[name](root / name)
        got = store.load(start=T0, end=T0 + 3600)
        try:
            xr.testing.assert_identical(got, ref)
        except AssertionError as exc:
            log(f"{name}: NOT identical to to_dataset: {str(exc)[:300]}")
            ok = False
    return ok


def environment() -> dict:
    import pyarrow
    import xarray
    import zarr

    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "numpy": np.__version__, "pyarrow": pyarrow.__version__, "zarr": zarr.__version__,
            "xarray": xarray.__version__, "tmpdir": tempfile.gettempdir()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=24.0, help="hours of 2 s windows (default: a day)")
    ap.add_argument("--layouts", default="arrow-hourly,arrow-parts,parquet-hourly,zarr-append")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--zarr-timed", type=int, default=120, help="zarr appends timed one by one (then hourly)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    n_windows = int(args.hours * 3600 / WINDOW_S)
    tmpl, means = template()
    t = time.perf_counter()
    counts = draw(means, n_windows, seed=1)
    log(f"drew {n_windows} windows in {time.perf_counter() - t:.1f} s, "
        f"{counts['total_hits'].mean():.0f} hits/window")
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="dtlive-history-bench-"))
    results = []
    try:
        for name in args.layouts.split(","):
            results.append(run_layout(name, root, tmpl, counts, n_windows, args.repeats, args.zarr_timed))
        identical = check_equal(root, tmpl, counts, args.layouts.split(","))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = {"benchmark": "history_load", "batch_windows": BATCH, "window_s": WINDOW_S,
           "target": "a day (43,200 windows) loads in < 1 s", "identical_to_to_dataset": identical,
           "verdict": "; ".join(sorted({r["verdict"] for r in results}))
           + ("" if identical else "; not met: a store gives back other windows than to_dataset"),
           "layouts": results, "environment": {**environment(), "loadavg_before": load_before,
                                                "loadavg_after": os.getloadavg()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    cols = ("layout", "append_ms_median", "append_ms_p99", "append_windows_per_s", "disk_mb", "files",
            "load_all_s", "load_all_cpu_s", "load_hour_s", "verdict")
    print(f"\nhistory store, {n_windows} windows of {WINDOW_S:g} s, appended {BATCH} at a time")
    print("  ".join(f"{c:>16}" for c in cols))
    for r in results:
        print("  ".join(f"{r[c]!s:>16}" for c in cols))
    print(f"load average before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"identical to to_dataset: {identical}; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
