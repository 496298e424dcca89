"""The wire contracts of dtlive: every schema id and header name, and the ``dtlive.monitor/1`` result <-> xarray.

Every message dtlive puts on Kafka names its kind with a versioned schema id (``"schema": "dtlive.<kind>/<n>"``
in its JSON), and the hits topic carries two headers. They are defined here, once, next to the one message
every consumer reads (the window result), so that the producer and the consumers of a message import the
same name and cannot drift apart; the services that build the other messages (:mod:`dtlive.kafka.health`,
:mod:`dtlive.storage.recorder`, :mod:`dtlive.alerts`) import their schema id from here. Dead-letter headers are
the exception: one function builds them all, in :mod:`dtlive.kafka.deadletter`.

>>> from dtlive.core.rows import Rows
>>> from dtlive.core.products import compute_products
>>> ds = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
>>> ds.attrs.update(window_id=0, first_orbit=0, last_orbit=99)
>>> back = to_dataset([encode_message(ds)])
>>> int(back.channel_occupancy.sel(chamber=0, channel=3)), back.attrs["window_id"]
(1, 0)
>>> to_dataset([encode_message(ds)] * 2).sizes["time"]
2
"""

from __future__ import annotations

import functools
import json
from collections.abc import Hashable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import orjson

if TYPE_CHECKING:  # imported where a Dataset is made, so that importing this module stays light
    import xarray as xr

from dtlive.core import detector as det
from dtlive.core.products import _ATTRS, NCH, PRODUCTS, REGISTRY, Settings, arrays_to_dataset
from dtlive.core.rows import Rows

MONITOR_SCHEMA = "dtlive.monitor/1"  # one window's histograms, on ``monitor_topic`` (this module)
STATUS_SCHEMA = "dtlive.status/1"  # a service's heartbeat, on ``status_topic`` (dtlive.kafka.health)
QUALITY_SCHEMA = "dtlive.quality/1"  # an automatic data-quality period, on ``quality_topic`` (dtlive.storage.recorder)
QUALITY_TESTS_SCHEMA = "dtlive.quality/2"  # per-chamber verdicts of tests against a reference (dtlive.core.judge)
ALERT_SCHEMA = "dtlive.alert/1"  # a parsed alert notice as JSON (dtlive.alerts.notices)
ANALYSIS_SCHEMA = "dtlive.analysis/1"  # a canned analysis' result, on ``analyses_topic`` (dtlive.alerts)
ALARM_SCHEMA = "dtlive.alarm/1"  # a chamber-status alarm event, on ``alarm_topic`` (dtlive.core.alarms)
# names only the schema of a dead letter's headers (dtlive.core.schemas): the record itself carries no schema id
DEAD_LETTER_SCHEMA = "dtlive.deadletter/1"

SCHEMA_HEADER = "schema"  # on results and heartbeats: their schema id, to route a record without parsing it
FORMAT_HEADER = "format"  # on hits: the payload format (dtlive.core.decode.FORMATS); absent: ``default_format``
EPOCH_HEADER = "orbit_epoch"  # on hits: UNIX seconds of ORBIT_CNT == 0, set by the emulator or the DAQ

COUNTS = ("rows", "ancillary", "special_channel_hits", "late_hits")
_PER_CHAMBER = ("channel_occupancy", "active_channels_per_orbit", "scint_channel_occupancy", "drift_time_ns")
_HISTOGRAM_PARTS = ("total_hits", "hits_per_chamber", *_PER_CHAMBER, "drift_time_ns_underflow",
                    "drift_time_ns_overflow")
#: The product variables a message carries as plain nested lists under ``variables`` (the reconstruction's).
VARIABLES = tuple(k for k in PRODUCTS if k not in _HISTOGRAM_PARTS)


@functools.lru_cache(maxsize=8)
def empty_variables(drift_edges: tuple[float, ...]) -> dict[str, np.ndarray]:
    """The :data:`VARIABLES` of no hits for a drift binning: what a message without them stands for.

    >>> v = empty_variables((0.0, 100.0, 200.0))
    >>> int(v["events"]), v["event_hits_per_chamber"].tolist(), v["timebox_meantimer"].shape
    (0, [0, 0, 0, 0], (4, 2))
    """
    arrays = REGISTRY.compute(Rows.empty(), Settings(np.array(drift_edges)))
    return {k: arrays[k] for k in VARIABLES}


@overload
def iso_utc(seconds: float) -> str: ...


@overload
def iso_utc(seconds: None) -> None: ...


def iso_utc(seconds: float | None) -> str | None:
    """UNIX seconds -> ISO 8601 UTC string with milliseconds (None passes through).

    >>> iso_utc(1.7e9), iso_utc(0.0125), iso_utc(None)
    ('2023-11-14T22:13:20.000Z', '1970-01-01T00:00:00.012Z', None)
    """
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_seconds(iso: str | None) -> float:
    """ISO 8601 UTC string -> UNIX seconds (NaN when missing); the inverse of :func:`iso_utc`.

    >>> utc_seconds(iso_utc(1.7e9)), str(utc_seconds(None))
    (1700000000.0, 'nan')
    """
    if not iso:
        return float("nan")
    return float(np.datetime64(iso.rstrip("Z"), "ms").astype("int64")) / 1000


def encode_message(ds: xr.Dataset) -> bytes:
    """Encode one window's Dataset (as made by :mod:`dtlive.core.products` plus window attrs) as JSON bytes.

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> ds = compute_products(Rows.from_columns(head=[2], fpga=[1], channel=[3], orbit=[7], bx=[0], tdc=[0]))
    >>> ds.attrs.update(window_id=2, first_orbit=0, last_orbit=99)
    >>> msg = decode_message(encode_message(ds))
    >>> msg["window"]["id"], msg["total_hits"], msg["hits_per_chamber"]
    (2, 1, [0, 0, 1, 0])
    """
    return message_bytes(message_dict(ds))


def message_bytes(msg: dict) -> bytes:
    """A message dict as compact JSON bytes (orjson: ~10x faster than ``json`` on these messages).

    >>> message_bytes({"schema": MONITOR_SCHEMA, "total_hits": np.int64(3), "hits_per_chamber": [1, 2, 0, 0]})
    b'{"schema":"dtlive.monitor/1","total_hits":3,"hits_per_chamber":[1,2,0,0]}'
    """
    return orjson.dumps(msg, option=orjson.OPT_SERIALIZE_NUMPY)


def message_dict(ds: xr.Dataset) -> dict:
    """The ``dtlive.monitor/1`` message of one window as a JSON-ready dict.

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> ds = compute_products(Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[3, 3], orbit=[7, 8], bx=[0, 0],
    ...                                         tdc=[0, 0]))
    >>> msg = message_dict(ds)
    >>> msg["schema"], msg["window"]["id"], msg["histograms"]["channel_occupancy"]["chamber_0"]["bin_counts"][3]
    ('dtlive.monitor/1', -1, 2)
    """
    names = [k for k in (*PRODUCTS, *COUNTS) if k in ds]
    return message_from_arrays({k: ds[k].values for k in names}, ds["drift_time_edges"].values, ds.attrs)


def message_from_arrays(arrays: dict, drift_edges: np.ndarray, attrs: dict, variables_as_arrays: bool = False) -> dict:
    """The message from plain product arrays and window attrs (no xarray: the processor's fast path).

    ``arrays`` holds the products of :func:`dtlive.core.products.compute_arrays` and the counts
    (missing counts are 0); ``attrs`` the window attributes (``window_id``, ``first_orbit``,
    ``last_orbit``, ``window_start``, ``window_end``, ``provenance`` and ``rejected_by_reason``
    as JSON strings). ``variables_as_arrays``: the reconstruction's ``variables`` stay numpy arrays instead of
    nested lists, for a message that is only encoded (:func:`message_bytes` writes the same JSON from them, a
    third of the time for a window of run 591).

    >>> from dtlive.core.products import REGISTRY
    >>> from dtlive.core.products.kernel import DRIFT_EDGES_NS
    >>> from dtlive.core.rows import Rows
    >>> arrays = REGISTRY.compute(Rows.from_columns(head=[2], fpga=[0], channel=[70], orbit=[7], bx=[0], tdc=[0]))
    >>> msg = message_from_arrays(arrays, DRIFT_EDGES_NS, {"window_id": 5, "rejected_by_reason": '{"empty": 2}'})
    >>> msg["window"]["id"], msg["hits_per_chamber"], msg["counts"]["rejected"], msg["counts"]["late_hits"]
    (5, [0, 1, 0, 0], {'empty': 2}, 0)
    >>> fast = message_from_arrays(arrays, DRIFT_EDGES_NS, {"window_id": 5}, variables_as_arrays=True)
    >>> type(fast["variables"]["segment_angle"]).__name__, message_bytes(fast) == message_bytes(
    ...     message_from_arrays(arrays, DRIFT_EDGES_NS, {"window_id": 5}))
    ('ndarray', True)
    """
    a = attrs
    occ_edges = {c: list(range((c % 2) * NCH, (c % 2) * NCH + NCH + 1)) for c in range(det.N_CHAMBERS)}
    mult_edges = list(range(1, NCH + 2))
    drift = np.asarray(drift_edges).tolist()

    def per_chamber(name: str, edges) -> dict:
        counts = np.asarray(arrays[name]).tolist()
        out = {}
        for c in range(det.N_CHAMBERS):
            entry = {"bin_edges": edges[c] if isinstance(edges, dict) else edges, "bin_counts": counts[c]}
            if name == "drift_time_ns":
                entry["underflow"] = int(arrays["drift_time_ns_underflow"][c])
                entry["overflow"] = int(arrays["drift_time_ns_overflow"][c])
            out[f"chamber_{c}"] = entry
        return out

    counts: dict[str, Any] = {k: int(arrays.get(k, 0)) for k in COUNTS}
    counts["rejected"] = dict(json.loads(a.get("rejected_by_reason", "{}")))
    return {
        "schema": MONITOR_SCHEMA,
        "window": {
            "id": int(a.get("window_id", -1)),
            "first_orbit": int(a.get("first_orbit", -1)),
            "last_orbit": int(a.get("last_orbit", -1)),
            "start": a.get("window_start"),
            "end": a.get("window_end"),
        },
        "provenance": json.loads(a.get("provenance", "{}")),
        "total_hits": int(arrays["total_hits"]),
        "hits_per_chamber": np.asarray(arrays["hits_per_chamber"]).tolist(),
        "counts": counts,
        "histograms": {
            "channel_occupancy": per_chamber("channel_occupancy", occ_edges),
            "active_channels_per_orbit": per_chamber("active_channels_per_orbit", mult_edges),
            "scint_channel_occupancy": per_chamber("scint_channel_occupancy", occ_edges),
            "drift_time_ns": per_chamber("drift_time_ns", drift),
        },
        # no events (or the reconstruction switched off): left out, as :func:`empty_variables` stands for it
        "variables": {k: (_json_array if variables_as_arrays else _nested_lists)(arrays[k])
                      for k in VARIABLES if k in arrays}
        if any(np.asarray(arrays[k]).any() for k in VARIABLES if k in arrays) else {},
    }


def _nested_lists(values) -> list | int | float:
    """``values`` as nested Python lists (a Python number for a scalar)."""
    return np.asarray(values).tolist()


def _json_array(values) -> np.ndarray | int | float:
    """``values`` as orjson writes numpy data: a C-contiguous array (the JSON of :func:`_nested_lists`), or a Python
    number for a scalar.

    >>> _json_array(np.int64(3)), _json_array(np.arange(6).reshape(2, 3)[:, 1]).flags.c_contiguous
    (3, True)
    """
    a = np.asarray(values)
    return a.item() if a.ndim == 0 else np.ascontiguousarray(a)


def decode_message(value: bytes | str | dict) -> dict:
    """Parse and check one result message; raises ValueError with the reason when it is not one.

    >>> decode_message(b'{"schema": "something/1"}')
    Traceback (most recent call last):
    ...
    ValueError: not a dtlive.monitor/1 message (schema='something/1')
    """
    msg = value if isinstance(value, dict) else orjson.loads(value)
    if not isinstance(msg, dict) or msg.get("schema") != MONITOR_SCHEMA:
        found = msg.get("schema") if isinstance(msg, dict) else None
        raise ValueError(f"not a {MONITOR_SCHEMA} message (schema={found!r})")
    return msg


def message_arrays(msg: dict) -> dict[str, np.ndarray]:
    """The product arrays and counts of one parsed message (plain numpy, no xarray: fast).

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> ds = compute_products(Rows.from_columns(head=[2, 2], fpga=[0, 1], channel=[3, 3], orbit=[7, 7], bx=[0, 0],
    ...                                         tdc=[0, 0]))
    >>> a = message_arrays(decode_message(encode_message(ds)))
    >>> int(a["total_hits"]), a["hits_per_chamber"].tolist(), a["channel_occupancy"].shape, int(a["rejected"])
    (2, [1, 0, 1, 0], (4, 64), 0)
    """
    h = msg["histograms"]
    arrays: dict[str, Any] = {  # arrays, and numpy scalars for the counts
        name: np.array([h[name][f"chamber_{c}"]["bin_counts"] for c in range(det.N_CHAMBERS)], np.int64)
        for name in _PER_CHAMBER
    }
    drift = [h["drift_time_ns"][f"chamber_{c}"] for c in range(det.N_CHAMBERS)]
    arrays["drift_time_ns_underflow"] = np.array([d.get("underflow", 0) for d in drift])
    arrays["drift_time_ns_overflow"] = np.array([d.get("overflow", 0) for d in drift])
    given = msg.get("variables", {})
    zeros = None
    for k in VARIABLES:
        if k in given:
            arrays[k] = np.array(given[k], np.int64)
        else:  # an older message: no events reconstructed
            zeros = zeros or empty_variables(tuple(h["drift_time_ns"]["chamber_0"]["bin_edges"]))
            arrays[k] = zeros[k]
    arrays["total_hits"] = np.int64(msg["total_hits"])
    arrays["hits_per_chamber"] = np.array(msg["hits_per_chamber"], np.int64)
    counts = msg.get("counts", {})
    for k in COUNTS:
        arrays[k] = np.int64(counts.get(k, 0))
    arrays["rejected"] = np.int64(sum(counts.get("rejected", {}).values()))
    return arrays


def to_dataset(messages: Iterable[bytes | str | dict], stack: bool | None = None) -> xr.Dataset:
    """Turn ``dt.monitor`` messages into one xarray Dataset.

    Several messages are stacked along a ``time`` dimension (the window start, with
    ``window_id``, ``first_orbit``, ``last_orbit`` and ``window_end`` as coordinates).
    One message gives a Dataset without the time dimension unless ``stack=True``.
    Accepts raw values (bytes/str), parsed dicts, or confluent-kafka messages.

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> ds = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
    >>> ds.attrs.update(window_id=4, first_orbit=0, last_orbit=99)
    >>> to_dataset([encode_message(ds)] * 2).sizes["time"]
    2
    """
    msgs = [decode_message(m.value() if hasattr(m, "value") and callable(m.value) else m) for m in messages]
    if not msgs:
        raise ValueError("no result messages to turn into a Dataset")
    msgs.sort(key=lambda m: m["window"]["id"])
    edges = np.array(msgs[0]["histograms"]["drift_time_ns"]["chamber_0"]["bin_edges"], float)
    per = [message_arrays(m) for m in msgs]
    names = (*PRODUCTS, *COUNTS, "rejected")
    if stack is False or (stack is None and len(msgs) == 1):
        ds = arrays_to_dataset(per[0], edges)
        for k in (*COUNTS, "rejected"):
            ds[k] = ((), per[0][k])
        ds.attrs.update(_window_attrs(msgs[0]))
        return ds
    stacked = {k: np.stack([p[k] for p in per]) for k in names}
    base = arrays_to_dataset({k: stacked[k][0] for k in PRODUCTS}, edges)
    data_vars: dict[str, tuple] = {
        k: (("time", *base[k].dims), stacked[k], _ATTRS.get(k, {})) for k in PRODUCTS
    }
    data_vars.update({k: ("time", stacked[k], {"units": "1"}) for k in (*COUNTS, "rejected")})
    ws = [m["window"] for m in msgs]
    coords: dict[Hashable, Any] = dict(base.coords)
    coords.update(
        time=("time", _times([w.get("start") for w in ws]), {"long_name": "window start (UTC)"}),
        window_end=("time", _times([w.get("end") for w in ws])),
        window_id=("time", np.array([w["id"] for w in ws], np.int64)),
        first_orbit=("time", np.array([w["first_orbit"] for w in ws], np.int64)),
        last_orbit=("time", np.array([w["last_orbit"] for w in ws], np.int64)),
        provenance=("time", np.array([json.dumps(m.get("provenance", {})) for m in msgs], object),
                    {"long_name": "provenance block of each window (JSON)"}),
    )
    by_reason = [m.get("counts", {}).get("rejected", {}) for m in msgs]
    reasons = sorted({r for rej in by_reason for r in rej})
    data_vars["rejected_by_reason"] = (
        ("time", "reason"),
        np.array([[rej.get(r, 0) for r in reasons] for rej in by_reason], np.int64).reshape(len(msgs), len(reasons)),
        {"units": "1", "long_name": "rejected input rows by reason"},
    )
    coords["reason"] = ("reason", np.array(reasons, dtype=object))
    import xarray as xr

    return xr.Dataset(data_vars, coords=coords, attrs={"schema": MONITOR_SCHEMA})


def _times(values: list[str | None]) -> np.ndarray:
    return np.array([np.datetime64(v.rstrip("Z"), "ms") if v else np.datetime64("NaT", "ms") for v in values],
                    dtype="datetime64[ms]")


def _window_attrs(msg: dict) -> dict:
    w = msg["window"]
    return {
        "schema": MONITOR_SCHEMA,
        "window_id": w["id"],
        "first_orbit": w["first_orbit"],
        "last_orbit": w["last_orbit"],
        "window_start": w.get("start"),
        "window_end": w.get("end"),
        "provenance": json.dumps(msg.get("provenance", {})),
        "rejected_by_reason": json.dumps(msg.get("counts", {}).get("rejected", {})),
    }
