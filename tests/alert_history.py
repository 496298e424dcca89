"""A synthetic history for alert analyses: N_WIN real monitor messages with an injected excess and a noisy
(bad) period, and an alert in the middle of the excess."""

from __future__ import annotations

import json

import numpy as np

from dtlive.alerts import parse_notice
from dtlive.core import detector as det
from dtlive.core.messages import decode_message, encode_message, iso_utc
from dtlive.core.products import compute_products
from dtlive.core.rows import Rows

T0 = 1_700_001_600.0  # window 0 starts here (2 s windows)
W = 2.0
ORBITS = det.orbits_for_seconds(W)
N_WIN = 340
TRIGGER = T0 + W * 320 + 1.0  # mid-window 320: the on-window [T-10, T+10) overlaps windows 315..325
RATES = (40, 50, 60, 45)  # mean hits per chamber per window
EXCESS = {2: (range(317, 324), 35)}  # chamber 2: +35 hits in windows 317..323
NOISY = {0: (range(100, 130), 120)}  # chamber 0: +120 hits in windows 100..129 (a noisy period flagged bad)
BAD = (T0 + 200.0, T0 + 260.0)  # the bad period = windows 100..129


def window_message(wid: int) -> dict:
    """A real dtlive.monitor/1 message of window ``wid``: Poisson hits per chamber plus the injected extras."""
    rng = np.random.default_rng(1000 + wid)
    n = rng.poisson(RATES)
    for extra in (EXCESS, NOISY):
        for c, (wins, k) in extra.items():
            if wid in wins:
                n[c] += k
    chamber = np.repeat(np.arange(4), n)
    m = len(chamber)
    hits = Rows.from_columns(head=np.full(m, 2), fpga=chamber // 2, channel=(chamber % 2) * 64 + rng.integers(0, 64, m),
                             orbit=wid * ORBITS + rng.integers(0, ORBITS, m), bx=rng.integers(0, 3564, m),
                             tdc=rng.integers(0, 30, m))
    ds = compute_products(hits)
    ds["rows"] = ((), np.int64(m))
    inputs = [{"topic": "dt.hits", "partition": 0, "first_offset": wid * 1000, "last_offset": wid * 1000 + 999}]
    prov = {"processor": "proc-a", "dtlive_version": "test", "config_hash": "cafe", "inputs": inputs}
    ds.attrs.update(window_id=wid, first_orbit=wid * ORBITS, last_orbit=(wid + 1) * ORBITS - 1,
                    window_start=iso_utc(T0 + W * wid), window_end=iso_utc(T0 + W * wid + W),
                    provenance=json.dumps(prov), rejected_by_reason="{}")
    return decode_message(encode_message(ds))


def alert(trigger=TRIGGER, record=1):
    notice = {"mission": "IceCube", "instrument": "IceCube", "id": ["42"], "record_number": record,
              "alert_type": "initial", "alert_tense": "current"}
    if trigger is not None:
        notice["trigger_time"] = iso_utc(trigger)
    return parse_notice(json.dumps(notice).encode(), topic="gcn.notices.icecube.lvk_nu_track_search")
