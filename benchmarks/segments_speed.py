"""Benchmark: local segments, efficiency and 3D tracks (``dtlive.core.reco``) in one process.

The simulator's muons, each event being the chamber hits of an orbit with a scintillator hit, timed from
it (``drift = t_hit - (t_scint - T0_OFFSET_NS[chamber])``), built once before any timing: 60 s at the
telescope's rates (140 Hz of muons, 5 kHz of hits) and 10 s of a dense stream (2 kHz of muons, 60 kHz of
hits, so noise hits join many events). Timed with ``timeit`` (best and median of ``--repeat`` rounds):
:func:`~dtlive.core.reco.segments.fit_segments`, :func:`~dtlive.core.reco.efficiency.layer_efficiency`
(four fits on three layers each) and :func:`~dtlive.core.reco.tracks.fit_tracks` (on the segments).
Rates are per second of one
core's work: input hits/s and segments (or tracks) out/s.

    .venv/bin/python -m benchmarks.segments_speed [--repeat 5]      # -> results/segments_speed.json
"""

from __future__ import annotations

import json
import statistics
import sys
import timeit

import numpy as np

from benchmarks.common import RESULTS_DIR, loadavg, log


def scintillator_events(duration_s: float, seed: int, config=None) -> dict[str, np.ndarray]:
    """Chamber hits of the orbits with a scintillator hit, as the plain arrays ``fit_segments`` takes."""
    from dtlive.core import detector as det
    from dtlive.core.rows import clean
    from dtlive.core.simulate import simulate

    hits, _ = clean(simulate(duration_s, seed=seed, config=config))
    t = det.time_in_orbit_ns(hits.bx, hits.tdc)
    scint = (hits.fpga == det.SCINT_FPGA) & (hits.channel == det.SCINT_CHANNEL)
    order = np.lexsort((t[scint], hits.orbit[scint]))
    orbits, times = hits.orbit[scint][order], t[scint][order]
    first = np.r_[True, orbits[1:] != orbits[:-1]]
    orbits, times = orbits[first], times[first]
    in_chamber = hits.channel < det.CHAMBER_CHANNELS
    orbit = hits.orbit[in_chamber]
    idx = np.clip(np.searchsorted(orbits, orbit), 0, len(orbits) - 1)
    ok = orbits[idx] == orbit
    channel = hits.channel[in_chamber][ok]
    chamber = det.chamber_of(hits.fpga[in_chamber][ok], channel)
    return {"event": orbit[ok], "chamber": chamber, "layer": det.layer_of(channel), "cell": det.cell_of(channel),
            "drift_ns": t[in_chamber][ok] - (times[idx[ok]] - det.T0_OFFSET_NS[chamber])}  # fmt: skip


def timed(fn, repeat: int) -> dict:
    """Best and median seconds per call of ``fn`` over ``repeat`` rounds of about 0.2 s each."""
    fn()
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    rounds = [t / number for t in timer.repeat(repeat=repeat, number=number)]
    return {"best_s": min(rounds), "median_s": statistics.median(rounds)}


def run(repeat: int = 5) -> dict:
    from dtlive.core.reco.efficiency import layer_efficiency
    from dtlive.core.reco.segments import fit_segments
    from dtlive.core.reco.tracks import fit_tracks
    from dtlive.core.simulate import SimConfig

    inputs = {
        "sim 60 s": scintillator_events(60.0, seed=1),
        "dense 10 s": scintillator_events(
            10.0, seed=2, config=SimConfig(hit_rate_hz=60_000, muon_rate_hz=2_000, ancillary_rate_hz=0)
        ),
    }
    out = {}
    for name, ev in inputs.items():
        seg = fit_segments(**ev)
        tracks = fit_tracks(seg)
        n_hits, n_events = len(ev["event"]), len(np.unique(ev["event"]))
        cases = {
            "fit_segments": (lambda ev=ev: fit_segments(**ev), len(seg)),
            "layer_efficiency": (lambda ev=ev: layer_efficiency(**ev), None),
            "fit_tracks": (lambda seg=seg: fit_tracks(seg), len(tracks)),
        }
        for case, (fn, n_out) in cases.items():
            r = timed(fn, repeat)
            r.update(hits=n_hits, events=n_events, out=n_out, hits_per_s=n_hits / r["best_s"],
                     out_per_s=None if n_out is None else n_out / r["best_s"])  # fmt: skip
            out[f"{case} | {name}"] = r
            log(f"segments_speed: {case} on {name}: {r['best_s'] * 1e3:.1f} ms best ({n_hits:,} hits)")
    return {"repeat": repeat, "cases": out, "loadavg_end": loadavg()}


def print_table(res: dict) -> None:
    print(f"{'case':<32}{'hits':>9}{'events':>8}{'out':>8}{'best ms':>10}{'median ms':>11}{'hits/s':>12}{'out/s':>11}")
    for name, c in res["cases"].items():
        out = "" if c["out"] is None else f"{c['out']:,}"
        rate = "" if c["out_per_s"] is None else f"{c['out_per_s']:,.0f}"
        print(f"{name:<32}{c['hits']:>9,}{c['events']:>8,}{out:>8}{c['best_s'] * 1e3:>10.1f}"
              f"{c['median_s'] * 1e3:>11.1f}{c['hits_per_s']:>12,.0f}{rate:>11}")  # fmt: skip
    print(f"load average at the end: {res['loadavg_end']}")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.segments_speed", description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds per case (default 5)")
    args = ap.parse_args(argv)
    res = run(args.repeat)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "segments_speed.json").write_text(json.dumps(res, indent=1))
    print_table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
