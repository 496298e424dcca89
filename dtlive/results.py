"""Read the monitor topic's result messages back as xarray, without parsing JSON by hand.

>>> ds = read_results("127.0.0.1:9092", last=20)   # doctest: +SKIP
>>> ds.hits_per_chamber.plot.line(x="time")        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time

import xarray as xr

from dtlive.config import Config, load_config
from dtlive.kafka import client_config, partition_ends
from dtlive.messages import decode_message, to_dataset


def read_messages(
    bootstrap: str, topic: str | None = None, last: int | None = None, cfg: Config | None = None, timeout: float = 10.0
) -> list[dict]:
    """Committed result messages of ``topic`` (all, or the ``last`` N per partition), parsed, in window order.

    ``topic`` defaults to the configured ``monitor_topic``. Uses its own assigned consumer (no consumer group
    join). Messages that are not ``dtlive.monitor/1`` are skipped.
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
                    out.append(decode_message(m.value()))
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
    """Result windows stacked along ``time`` as one Dataset (None when there are none)."""
    msgs = read_messages(bootstrap, topic, last, cfg, timeout)
    return to_dataset(msgs, stack=True) if msgs else None
