"""Real ``dtlive.monitor/1`` messages of a simulated detector (2 s windows), optionally with a chamber gone
silent, for the tests of live judging."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np

from dtlive.core import detector as det
from dtlive.core.messages import decode_message, encode_message, iso_utc
from dtlive.core.products import compute_products
from dtlive.core.simulate import DEFAULT_START_ORBIT, SimConfig, stream

W = 2.0
T0 = 1_764_928_800.0  # 2025-12-05T10:00:00Z
CONFIG = SimConfig(ancillary_rate_hz=0.0, n_noisy_channels=0)


def sim_messages(n: int, seed: int = 11, silent_chamber: int | None = None, silent_from: int = 0,
                 processor: str = "proc", silent_until: int | None = None) -> list[dict]:
    """``n`` window messages; from window ``silent_from`` on (to before ``silent_until``, if given),
    ``silent_chamber`` (if any) has no hit at all."""
    out = []
    for k, rows in enumerate(islice(stream(chunk_s=W, seed=seed, config=CONFIG), n)):
        hits = rows.select(rows.head == det.HIT_HEAD)
        if silent_chamber is not None and silent_from <= k < (n if silent_until is None else silent_until):
            hits = hits.select(det.chamber_of(hits.fpga, hits.channel) != silent_chamber)
        ds = compute_products(hits)
        ds["rows"] = ((), np.int64(len(hits)))
        ds.attrs.update(window_id=k, first_orbit=DEFAULT_START_ORBIT + int(np.floor(k * W / det.ORBIT_S)),
                        last_orbit=DEFAULT_START_ORBIT + int(np.floor((k + 1) * W / det.ORBIT_S)) - 1,
                        window_start=iso_utc(T0 + W * k), window_end=iso_utc(T0 + W * (k + 1)),
                        provenance=json.dumps({"processor": processor, "config_hash": "sim"}))
        out.append(decode_message(encode_message(ds)))
    return out
