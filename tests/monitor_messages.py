"""Real ``dtlive.monitor/1`` messages of small synthetic windows, for the dashboard and results tests."""

from __future__ import annotations

import json

import numpy as np

from dtlive.core.messages import decode_message, encode_message, iso_utc
from dtlive.core.products import compute_products
from dtlive.core.rows import Rows

T0 = 1_700_000_000.0


def message(wid: int, n_hits: int, chamber_channel: int = 3, rejected: dict | None = None, processor="p") -> dict:
    """A real dtlive.monitor/1 message of one 2 s window with ``n_hits`` hits on one channel."""
    rng = np.random.default_rng(wid)
    zeros = np.zeros(n_hits, int)
    hits = Rows.from_columns(head=np.full(n_hits, 2), fpga=zeros, channel=np.full(n_hits, chamber_channel),
                             orbit=wid * 22447 + rng.integers(0, 22447, n_hits), bx=zeros, tdc=zeros)
    ds = compute_products(hits)
    ds["rows"] = ((), np.int64(n_hits))
    ds.attrs.update(window_id=wid, first_orbit=wid * 22447, last_orbit=(wid + 1) * 22447 - 1,
                    window_start=iso_utc(T0 + 2 * wid), window_end=iso_utc(T0 + 2 * wid + 2),
                    provenance=json.dumps({"processor": processor}), rejected_by_reason=json.dumps(rejected or {}))
    return decode_message(encode_message(ds))


def encode_message_dict(msg: dict) -> bytes:
    """A decoded message back to its JSON bytes."""
    return json.dumps(msg).encode()
