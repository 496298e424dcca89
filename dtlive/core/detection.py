"""Fault detection on simulated data: how soon the quality tests flag a fault, and how often a sound detector.

The simulator's windows (:func:`simulated_messages`: its stream cut in windows of ``window_s``, their products
as the processor computes them, as ``dtlive.monitor/1`` messages) are judged in lumi blocks against a
reference as the recorder judges them (:class:`dtlive.core.lumi.LumiJudge`). :func:`detection` runs the
windows of a detector with faults (:class:`dtlive.core.faults.Faults`), starting at a given window, until a
block flags the chamber at fault; :func:`false_alarms` counts the blocks of a sound detector with any test at
warning or error. Both are pure (numpy and xarray; the caller keeps the results).

>>> from dtlive.core.faults import Faults, per_chamber
>>> from dtlive.core.simulate import SimConfig
>>> from dataclasses import replace
>>> ref = simulated_reference(SOUND, seed=3, windows=10)
>>> faulty = replace(SOUND, faults=Faults(hit_fraction=per_chamber(2, 0.05, 1.0)))
>>> d = detection(faulty, ref, chamber=2, seed=3, first=10, max_windows=10, block=5)
>>> d["detected"], d["windows"], d["status"], "chamber_rate" in d["tests"]
(True, 5, 4, True)
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import xarray as xr

from dtlive.core import detector as det
from dtlive.core.faults import Faults, per_chamber
from dtlive.core.judge import ChecksConfig, load_tests_config
from dtlive.core.lumi import LumiJudge
from dtlive.core.messages import decode_message, message_bytes, message_from_arrays, to_dataset
from dtlive.core.products import compute_arrays
from dtlive.core.products.kernel import DRIFT_EDGES_NS
from dtlive.core.references import make_reference
from dtlive.core.rows import clean
from dtlive.core.simulate import DEFAULT_START_ORBIT, SimConfig, stream

WINDOW_S = 2.0
#: The sound simulated detector: the simulator's defaults without ancillary words or noisy channels.
SOUND = SimConfig(ancillary_rate_hz=0.0, n_noisy_channels=0)
BLOCK = 5  # windows of a lumi block, as the recorder judges them (``judge_windows``)


@dataclass(frozen=True)
class FaultCase:
    """A fault of one chamber and its stated detection: flagged within ``within_windows`` windows of its start,
    by one of ``tests`` (the quality tests that name it), with the chamber's status at least ``status``.

    >>> FAULT_CASES["t0_shift"].faults.describe()
    'chamber 0 t0 shifted by +10 ns'
    """

    name: str
    chamber: int
    faults: Faults
    within_windows: int
    tests: tuple[str, ...]
    status: int = 1


#: The faults the quality tests are shown to detect (tests/core/test_faults.py, benchmarks/detection.py).
FAULT_CASES = {c.name: c for c in (
    FaultCase("dead_channel", 1, Faults(dead_channels=((1, 37),)), BLOCK, ("dead_channels",)),
    FaultCase("noisy_channel", 2, Faults(noisy_channels=((2, 22, 200.0),)), BLOCK, ("noisy_channels",)),
    FaultCase("hv_loss", 3, Faults(hit_fraction=per_chamber(3, 0.05, 1.0)), BLOCK, ("chamber_rate",), status=3),
    FaultCase("t0_shift", 0, Faults(t0_shift_ns=per_chamber(0, 10.0, 0.0)), BLOCK, ("timebox_edges",)),
    FaultCase("drift_velocity", 1, Faults(drift_velocity_scale=per_chamber(1, 0.9, 1.0)), BLOCK,
              ("timebox_edges",)),
)}


def simulated_messages(config: SimConfig, seed: int, first: int = 0, count: int | None = None,
                       window_s: float = WINDOW_S, processor: str = "simulation") -> Iterator[dict]:
    """The parsed ``dtlive.monitor/1`` messages of windows ``first`` .. ``first + count - 1`` of the simulated
    stream (endless when ``count`` is None): window k holds the hits timed in ``[k, k + 1) x window_s`` after
    the stream's start, its products computed as the processor does (cleansed hits, every product).

    The windows before ``first`` are simulated (the stream is sequential) but not processed. Streams of one
    seed with and without faults hold the same muons, so the windows of a fault from ``first`` on follow a
    reference made of the sound detector's windows before it.

    >>> m = next(simulated_messages(SOUND, seed=1, first=2, count=1))
    >>> m["window"]["id"], m["total_hits"] > 8000, m["provenance"]["processor"]
    (2, True, 'simulation')
    """
    chunks = stream(chunk_s=window_s, seed=seed, config=config)
    stop = None if count is None else first + count
    for k, rows in itertools.islice(enumerate(chunks), first, stop):
        hits, _ = clean(rows)
        attrs = {"window_id": k, "first_orbit": DEFAULT_START_ORBIT + int(k * window_s / det.ORBIT_S),
                 "last_orbit": DEFAULT_START_ORBIT + int((k + 1) * window_s / det.ORBIT_S) - 1,
                 "provenance": json.dumps({"processor": processor, "config_hash": f"simulation-{seed}"})}
        msg = message_from_arrays(compute_arrays(hits, DRIFT_EDGES_NS), DRIFT_EDGES_NS, attrs)
        yield decode_message(message_bytes(msg))


def simulated_reference(config: SimConfig, seed: int, windows: int = 30, window_s: float = WINDOW_S
                        ) -> xr.Dataset:
    """A reference of the first ``windows`` windows of the simulated detector (for the same seed's faults).

    >>> ref = simulated_reference(SOUND, seed=1, windows=2)
    >>> ref.attrs["windows"], round(ref.attrs["seconds"], 2), json.loads(ref.attrs["detector"])["simulator_seed"]
    (2, 4.0, 1)
    """
    msgs = list(simulated_messages(config, seed, 0, windows, window_s))
    return make_reference(to_dataset(msgs, stack=True), label=f"simulation seed {seed}",
                          detector={"simulator_seed": seed, "faults": config.faults.describe()})


def alarms(verdict: dict, chamber: int | None = None) -> list[str]:
    """The tests of a verdict at warning or error (of one chamber, or all of them and the detector-wide ones).

    >>> v = {"chambers": {"chamber_0": {"tests": [{"test": "rate", "product": "hits", "status": "error",
    ...      "reason": "low"}]}}, "detector": {"tests": []}}
    >>> alarms(v), alarms(v, chamber=1)
    (['chamber_0 rate (hits): low'], [])
    """
    names = [f"chamber_{chamber}"] if chamber is not None else sorted(verdict.get("chambers", {}))
    tests = [(n, t) for n in names for t in verdict.get("chambers", {}).get(n, {}).get("tests", [])]
    if chamber is None:
        tests += [("detector", t) for t in verdict.get("detector", {}).get("tests", [])]
    return [f"{n} {t['test']} ({t['product']}): {t['reason']}" for n, t in tests if t["status"] in ("warning", "error")]


def detection(config: SimConfig, reference: xr.Dataset, chamber: int, seed: int, first: int, max_windows: int,
              block: int = 5, window_s: float = WINDOW_S, tests: ChecksConfig | None = None) -> dict:
    """Judge the windows from ``first`` on in blocks of ``block`` until one flags ``chamber`` (status >= 1).

    Returns ``{"detected", "windows", "seconds", "blocks", "status", "tests", "reasons", "other_chambers"}``:
    the windows (and seconds) from the fault's start to the end of the first flagging block, its chamber
    status, the tests at warning/error there, and the statuses the block gave the other chambers.
    ``detected`` is False (and ``windows`` None) when no block of ``max_windows`` windows flags it.

    >>> ref = simulated_reference(SOUND, seed=4, windows=5)
    >>> d = detection(SOUND, ref, chamber=0, seed=4, first=5, max_windows=5)  # no fault: nothing to find
    >>> d["detected"], d["windows"], d["blocks"]
    (False, None, 1)
    """
    lumi = LumiJudge(block, reference, tests or load_tests_config())
    blocks = 0
    for msg in simulated_messages(config, seed, first, max_windows, window_s):
        for verdict in lumi.add([msg]):
            blocks += 1
            mine = verdict["chambers"][f"chamber_{chamber}"]
            if (mine["status"] or 0) >= 1:
                return {"detected": True, "windows": blocks * block, "seconds": blocks * block * window_s,
                        "blocks": blocks, "status": mine["status"],
                        "tests": sorted({t["test"] for t in mine["tests"] if t["status"] in ("warning", "error")}),
                        "reasons": mine["reasons"],
                        "other_chambers": {n: c["status"] for n, c in verdict["chambers"].items()
                                           if n != f"chamber_{chamber}"}}
    return {"detected": False, "windows": None, "seconds": None, "blocks": blocks, "status": None, "tests": [],
            "reasons": [], "other_chambers": {}}


def detect_case(case: FaultCase, reference: xr.Dataset, seed: int, first: int, max_windows: int,
                base: SimConfig | None = None, block: int = BLOCK, tests: ChecksConfig | None = None) -> dict:
    """:func:`detection` of a :class:`FaultCase` put into ``base`` (default: the simulator's defaults without
    ancillary words) from window ``first`` on; adds whether one of the case's tests flagged it (``named``)
    and whether that came within the stated windows (``within``).

    >>> ref = simulated_reference(SOUND, seed=4, windows=5)
    >>> d = detect_case(FAULT_CASES["dead_channel"], ref, seed=4, first=5, max_windows=5)
    >>> d["detected"], d["named"], d["within"], d["windows"], d["seconds"]
    (True, True, True, 5, 10.0)
    """
    config = replace(base or SOUND, faults=case.faults)
    d = detection(config, reference, case.chamber, seed, first, max_windows, block, tests=tests)
    d["named"] = bool(set(d["tests"]) & set(case.tests))
    d["within"] = d["detected"] and d["windows"] <= case.within_windows and d["status"] >= case.status
    return d


def false_alarms(config: SimConfig, reference: xr.Dataset, seed: int, first: int, windows: int, block: int = 5,
                 window_s: float = WINDOW_S, tests: ChecksConfig | None = None) -> dict:
    """Judge ``windows`` windows of a (sound) detector from ``first`` on in blocks of ``block``; count alarms.

    Returns ``{"blocks", "seconds", "blocks_with_alarm", "warnings", "errors", "max_status", "not_judged",
    "alarms", "edges"}``: blocks judged, their exposure, blocks with any test at warning/error, tests at warning
    and at error, the worst chamber status, chamber verdicts without any judged test, the first 20 alarms, and
    for each ``timebox`` test and product the fitted edges' deviations from the reference (``t0``, ``tmax``:
    lists of ns, and of ns over their uncertainty, ``t0_pull``, ``tmax_pull``).

    >>> ref = simulated_reference(SOUND, seed=4, windows=5)  # a short reference: some alarms are possible
    >>> out = false_alarms(SOUND, ref, seed=4, first=5, windows=5)
    >>> out["blocks"], out["seconds"], sorted(out["edges"])
    (1, 10.0, ['timebox_edges (drift_time_ns)', 'timebox_edges (timebox_meantimer)'])
    """
    lumi = LumiJudge(block, reference, tests or load_tests_config())
    out: dict[str, Any]
    out = {"blocks": 0, "seconds": 0.0, "blocks_with_alarm": 0, "warnings": 0, "errors": 0, "max_status": 0,
           "not_judged": 0, "alarms": [], "edges": {}}
    for msg in simulated_messages(config, seed, first, windows, window_s):
        for verdict in lumi.add([msg]):
            out["blocks"] += 1
            out["seconds"] += block * window_s
            found = alarms(verdict)
            out["blocks_with_alarm"] += bool(found)
            out["alarms"] = (out["alarms"] + found)[:20]
            results = [t for c in verdict["chambers"].values() for t in c["tests"]] + verdict["detector"]["tests"]
            out["warnings"] += sum(t["status"] == "warning" for t in results)
            out["errors"] += sum(t["status"] == "error" for t in results)
            statuses = [c["status"] for c in verdict["chambers"].values()]
            out["max_status"] = max([out["max_status"], *[s for s in statuses if s is not None]])
            out["not_judged"] += sum(s is None for s in statuses)
            for t in results:
                if t["kind"] == "timebox" and t["status"] != "not_enough_statistics":
                    _edge_deviations(out["edges"].setdefault(f"{t['test']} ({t['product']})", {}), t["details"])
    return out


def _edge_deviations(into: dict, d: dict) -> None:
    for name in ("t0", "tmax"):
        dev = d[f"{name}_ns"] - d[f"{name}_ns_reference"]
        into.setdefault(name, []).append(round(dev, 3))
        into.setdefault(f"{name}_pull", []).append(round(dev / max(d[f"{name}_err_ns"], 1e-9), 3))
