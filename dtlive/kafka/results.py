"""Read the monitor topic's result messages back as xarray, without parsing JSON by hand; print them as a table.

>>> ds = read_results("127.0.0.1:9092", last=20)   # doctest: +SKIP
>>> ds.hits_per_chamber.plot.line(x="time")        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # imported where a Dataset is made, so that importing this module stays light
    import xarray as xr

from dtlive.config import Config, load_config
from dtlive.core import detector as det
from dtlive.core.messages import decode_message, to_dataset
from dtlive.kafka.clients import client_config, partition_ends


def read_messages(
    bootstrap: str, topic: str | None = None, last: int | None = None, cfg: Config | None = None, timeout: float = 10.0
) -> list[dict]:
    """Committed result messages of ``topic`` (all, or the ``last`` N per partition), parsed, in window order.

    ``topic`` defaults to the configured ``monitor_topic``. Uses its own assigned consumer (no consumer group
    join). Messages that are not ``dtlive.monitor/1`` are skipped.

    >>> msgs = read_messages("127.0.0.1:9092", last=3)  # doctest: +SKIP
    >>> [m["window"]["id"] for m in msgs]  # doctest: +SKIP
    [418, 419, 420]
    """
    from confluent_kafka import Consumer, TopicPartition

    cfg = cfg or load_config({})
    topic = topic or cfg.monitor_topic
    bounds = partition_ends(cfg, bootstrap, topic, timeout)
    ends = {p: high for p, (low, high) in bounds.items() if high > low}
    if not ends:
        return []
    c = Consumer(
        client_config(
            cfg,
            bootstrap,
            **{"group.id": "dtlive-results-reader", "enable.auto.commit": False, "isolation.level": "read_committed"},
        )
    )
    try:
        c.assign(
            [
                TopicPartition(topic, p, low if last is None else max(low, high - last * 2 - 10))
                for p, (low, high) in bounds.items()
                if p in ends
            ]
        )
        out, deadline, quiet_since = [], time.monotonic() + timeout, time.monotonic()
        # Stop at the end, or when nothing more comes for a second (the rest sits in an open transaction).
        while ends and time.monotonic() < deadline and time.monotonic() - quiet_since < 1.0:
            msgs = c.consume(10_000, 0.2)
            if msgs:
                quiet_since = time.monotonic()
            for m in msgs:
                if m.error():
                    continue
                with contextlib.suppress(ValueError):
                    out.append(decode_message(m.value() or b""))
            for tp in c.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    ends.pop(tp.partition, None)
        out.sort(key=lambda m: m["window"]["id"])
        return out[-last:] if last else out
    finally:
        c.close()


def read_results(
    bootstrap: str, topic: str | None = None, last: int | None = None, cfg: Config | None = None, timeout: float = 10.0
) -> xr.Dataset | None:
    """Result windows stacked along ``time`` as one Dataset (None when there are none).

    >>> ds = read_results("127.0.0.1:9092", last=100)  # doctest: +SKIP
    >>> ds.sizes["time"], ds.hits_per_chamber.dims  # doctest: +SKIP
    (100, ('time', 'chamber'))
    """
    msgs = read_messages(bootstrap, topic, last, cfg, timeout)
    return to_dataset(msgs, stack=True) if msgs else None


#: The columns of :class:`ResultsTable` and their widths.
COLUMNS = {"window": 9, "start (UTC)": 24, "rows": 10, "hits": 10, **{f"ch{c}": 9 for c in range(det.N_CHAMBERS)},
           "rejected": 9, "late": 7}


def window_scalars(msg: dict) -> dict[str, object]:
    """The scalars of one parsed result message, by :data:`COLUMNS` name.

    >>> msg = {"window": {"id": 7, "start": "2026-12-05T08:00:00.000Z"}, "total_hits": 10,
    ...        "hits_per_chamber": [1, 2, 3, 4], "counts": {"rows": 12, "late_hits": 1, "rejected": {"bad_head": 2}}}
    >>> window_scalars(msg)["hits"], window_scalars(msg)["ch3"], window_scalars(msg)["rejected"]
    (10, 4, 2)
    """
    w, counts = msg["window"], msg.get("counts", {})
    row: dict[str, object] = {"window": w["id"], "start (UTC)": (w.get("start") or "-").rstrip("Z"),
                              "rows": counts.get("rows", 0), "hits": msg["total_hits"]}
    row.update({f"ch{c}": n for c, n in enumerate(msg["hits_per_chamber"])})
    row.update(rejected=sum(counts.get("rejected", {}).values()), late=counts.get("late_hits", 0))
    return row


class ResultsTable:
    """Result windows as a text table: the header once, then one line per window, each window once.

    Windows come in any batches, again or out of order (a live feed that re-reads): a window already printed is
    left out, and so is one older than the first printed (it belongs above the table's start).

    >>> msg = {"window": {"id": 7, "start": "2026-12-05T08:00:00.000Z"}, "total_hits": 10,
    ...        "hits_per_chamber": [1, 2, 3, 4], "counts": {"rows": 12, "rejected": {"bad_head": 2}}}
    >>> table = ResultsTable()
    >>> table.add([msg, msg])
       window             start (UTC)      rows      hits      ch0      ch1      ch2      ch3 rejected   late
            7 2026-12-05T08:00:00.000        12        10        1        2        3        4        2      0
    1
    >>> table.add([msg, {**msg, "window": {"id": 6}}])
    0
    """

    def __init__(self, out: TextIO | None = None):
        self.out = out
        self.printed: set[int] = set()
        self.first: int | None = None

    def add(self, msgs: Iterable[dict]) -> int:
        """Print the lines of the windows not printed yet (in window order); return how many."""
        out = self.out or sys.stdout
        fresh = {}
        for m in msgs:
            wid = m["window"]["id"]
            if wid not in self.printed and (self.first is None or wid > self.first):
                fresh[wid] = m
        for wid in sorted(fresh):
            if self.first is None:
                self.first = wid
                print(self._line(dict(zip(COLUMNS, COLUMNS, strict=True))), file=out)
            self.printed.add(wid)
            print(self._line(window_scalars(fresh[wid])), file=out)
        out.flush()
        return len(fresh)

    @staticmethod
    def _line(values: dict) -> str:
        return "".join(f"{values[name]!s:>{width}}" for name, width in COLUMNS.items())
