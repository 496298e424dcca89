"""In-process cost of the muon reconstruction: ``REGISTRY.compute`` with and without it, per hit.

    PYTHONPATH=. .venv/bin/python -m benchmarks.reco_speed [--repeat 7] [--profile]     # -> results/reco_speed.json

All figures are IN-PROCESS: the window products of cleansed hits in this Python process, no Kafka, no
decoding, no publishing. Data, built before any timing: every 2 s window of run 591 (real hits, ~9.4k per
window, no scintillator) and one 2 s window of dense simulation (250 kHz of hits, 5 kHz of muons, ~500k hits).
Timed in CPU time of the process (``time.process_time``: other work on a shared machine slows it less than wall
time): ``REGISTRY.compute(window, Settings(reconstruction=False))`` (the counting products only, what
``dtlive process --no-reconstruction`` runs) and ``REGISTRY.compute(window)`` (all products: events, t0s, time
boxes, segments, efficiency), alternately window by window for ``--repeat`` rounds; per window the best round
(the least disturbed by other work) and the median one, summed over the windows. Each data set is measured in
a process of its own.

Repeated rounds over the same windows find their data and the code warm in the caches: a lower bound. The
**one pass** figures are nearer what a processor sees: every window computed once, without and then with the
reconstruction, in order, as fresh copies (the windows repeated with their orbits shifted, about 4M hits); each
pass is timed whole.

Reported per data set: ns per hit without and with the reconstruction, the reconstruction's own ns per hit (the
difference), the ratio with / without, and hits/s and muon events/s (the windows' events per CPU second).
``--profile`` adds the functions taking the most time of the reconstruction on run 591 (cProfile).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import DATA_FILE, RESULTS_DIR, loadavg, log

DENSE = {"hit_rate_hz": 250_000, "muon_rate_hz": 5_000, "ancillary_rate_hz": 0}


DATASETS = ("run 591, 2 s windows", "dense sim, 2 s window")


def datasets(only: str | None = None) -> dict[str, list]:
    """The benchmark's windows of cleansed hits, by data set (``only``: that one)."""
    from dtlive.core import detector as det
    from dtlive.core.decode import read_csv
    from dtlive.core.rows import clean
    from dtlive.core.simulate import SimConfig, simulate

    out = {}
    if only in (None, DATASETS[0]):
        if DATA_FILE.is_file():
            run, _ = clean(read_csv(str(DATA_FILE)))
            wid = run.orbit // det.orbits_for_seconds(2.0)
            out[DATASETS[0]] = [run.select(wid == w) for w in np.unique(wid)]
        else:
            log(f"reco_speed: run 591 is not at {DATA_FILE}; simulation only")
    if only in (None, DATASETS[1]):
        out[DATASETS[1]] = [clean(simulate(2.0, seed=2, config=SimConfig(**DENSE)))[0]]
    return out


def cpu_seconds(fn, *args) -> float:
    t0 = time.process_time()
    fn(*args)
    return time.process_time() - t0


def measure(windows: list, repeat: int) -> dict:
    """CPU seconds of the products of ``windows`` without and with the reconstruction (best and median rounds)."""
    from dtlive.core.products import REGISTRY, Settings

    off, on = Settings(reconstruction=False), Settings()
    events = sum(int(REGISTRY.compute(w, on)["events"]) for w in windows)  # also warms every code path
    times = {"without": np.zeros((repeat, len(windows))), "with": np.zeros((repeat, len(windows)))}
    for r in range(repeat):
        for i, w in enumerate(windows):  # alternately, so that both see the same conditions
            times["without"][r, i] = cpu_seconds(REGISTRY.compute, w, off)
            times["with"][r, i] = cpu_seconds(REGISTRY.compute, w, on)
    hits = sum(len(w) for w in windows)
    out = {"windows": len(windows), "hits": hits, "events": events, "one_pass": one_pass(windows)}
    for stat, f in (("best", np.min), ("median", np.median)):
        without, with_ = (float(f(times[k], axis=0).sum()) for k in ("without", "with"))
        out[stat] = {
            "ns_per_hit_without": without / hits * 1e9,
            "ns_per_hit_with": with_ / hits * 1e9,
            "ns_per_hit_reconstruction": (with_ - without) / hits * 1e9,
            "ratio_with_without": with_ / without,
            "hits_per_s_without": hits / without,
            "hits_per_s_with": hits / with_,
            "events_per_s_without": events / without,
            "events_per_s_with": events / with_,
        }
    return out


def one_pass(windows: list, hits_at_least: int = 4_000_000) -> dict:
    """CPU ns per hit of one pass over fresh copies of ``windows`` (repeated, orbits shifted, until there are
    ``hits_at_least`` hits), each window computed once: without the reconstruction, then with it."""
    from dtlive.core.products import REGISTRY, Settings
    from dtlive.core.rows import COLUMNS, Rows

    span = int(max(w.orbit.max() for w in windows if len(w))) + 1
    copies = max(1, -(-hits_at_least // max(sum(len(w) for w in windows), 1)))
    def shifted(w, k: int) -> Rows:
        return Rows.from_columns(**{c: getattr(w, c) + k * span if c == "orbit" else getattr(w, c).copy()
                                    for c in COLUMNS})

    fresh = [shifted(w, k) for k in range(copies) for w in windows]
    hits = sum(len(w) for w in fresh)
    out = {"windows": len(fresh), "hits": hits}
    for name, settings in (("without", Settings(reconstruction=False)), ("with", Settings())):
        out[f"ns_per_hit_{name}"] = cpu_seconds(lambda s=settings: [REGISTRY.compute(w, s) for w in fresh]) / hits * 1e9
    out["ns_per_hit_reconstruction"] = out["ns_per_hit_with"] - out["ns_per_hit_without"]
    out["ratio_with_without"] = out["ns_per_hit_with"] / out["ns_per_hit_without"]
    return out


def profile(windows: list, top: int = 20) -> str:
    """cProfile of the reconstruction products alone on ``windows``: the functions taking the most time."""
    import cProfile
    import io
    import pstats

    from dtlive.core.products import REGISTRY, Registry

    reco = Registry([p for p in REGISTRY.products if p.reconstruction])
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        for w in windows:
            reco.compute(w)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def print_table(res: dict) -> None:
    print("IN-PROCESS: REGISTRY.compute on windows of cleansed hits (CPU time, best round per window; median)")
    print(f"{'data':<24}{'hits':>9}{'events':>8}{'ns/hit w/o':>12}{'ns/hit with':>13}{'reco ns/hit':>13}"
          f"{'ratio':>7}{'hits/s with':>13}{'events/s with':>15}")  # fmt: skip
    for name, c in res["data"].items():
        b, m = c["best"], c["median"]
        print(f"{name:<24}{c['hits']:>9,}{c['events']:>8,}{b['ns_per_hit_without']:>12,.0f}"
              f"{b['ns_per_hit_with']:>13,.0f}{b['ns_per_hit_reconstruction']:>13,.0f}{b['ratio_with_without']:>7.2f}"
              f"{b['hits_per_s_with']:>13,.0f}{b['events_per_s_with']:>15,.0f}")  # fmt: skip
        print(f"{'  (median rounds)':<24}{'':>9}{'':>8}{m['ns_per_hit_without']:>12,.0f}{m['ns_per_hit_with']:>13,.0f}"
              f"{m['ns_per_hit_reconstruction']:>13,.0f}{m['ratio_with_without']:>7.2f}{m['hits_per_s_with']:>13,.0f}"
              f"{m['events_per_s_with']:>15,.0f}")  # fmt: skip
    for name, c in res["data"].items():
        o = c["one_pass"]
        print(f"{'  (one pass, ' + format(o['windows'], ',') + ' fresh windows)':<41}{o['ns_per_hit_without']:>12,.0f}"
              f"{o['ns_per_hit_with']:>13,.0f}{o['ns_per_hit_reconstruction']:>13,.0f}{o['ratio_with_without']:>7.2f}"
              f"  [{name}]")  # fmt: skip
    print(f"load average at the start / end: {res['loadavg_start']} / {res['loadavg_end']}")


def measure_apart(name: str, repeat: int) -> dict | None:
    """:func:`measure` of data set ``name`` in a new process, so that each starts from the same memory state (the
    allocator's: after small windows, the large arrays of a dense one come from fresh pages, ~40 ns per hit more)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.reco_speed", "--one", name, "--repeat", str(repeat)],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"reco_speed on {name!r} failed (exit {out.returncode}): {out.stderr[-2000:]}")
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "null"
    return json.loads(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.reco_speed", description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="timed rounds per window (default 7)")
    ap.add_argument("--profile", action="store_true", help="also print where the reconstruction's time goes")
    ap.add_argument("--one", choices=DATASETS, help=argparse.SUPPRESS)  # a data set in this process, JSON out
    args = ap.parse_args(argv)
    if args.one:
        windows = datasets(args.one).get(args.one)
        print(json.dumps(measure(windows, args.repeat) if windows else None))
        return 0
    res = {"in_process": True, "repeat": args.repeat, "loadavg_start": loadavg(), "data": {}}
    for name in DATASETS:
        measured = measure_apart(name, args.repeat)
        if measured is None:
            continue
        res["data"][name] = measured
        log(f"reco_speed: {name}: {measured['best']['ns_per_hit_reconstruction']:.0f} ns/hit of reconstruction")
    res["loadavg_end"] = loadavg()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "reco_speed.json").write_text(json.dumps(res, indent=1))
    print_table(res)
    if args.profile:
        print(profile(next(iter(datasets(DATASETS[0]).values()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
