"""Multi-partition topics on the real broker: rows spread by FPGA or chamber, windows still exact.

The watermark is the minimum over partitions, and nothing closes before every partition with input
has delivered something, so a keyed replay gives exactly the whole-file figures.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from contracts import read_results
from datafiles import RUN_CSV
from pipeline_runs import assert_matches, expected_products, process_all

from dtlive.config import load_config
from dtlive.core.rows import Rows
from dtlive.kafka.clients import ensure_topics, partition_ends
from dtlive.kafka.emulator import Chunk, emulate, file_chunks, split_by_key

pytestmark = pytest.mark.kafka


def test_split_by_key_groups_rows_and_keeps_order():
    rows = Rows.from_columns(head=[2] * 6, fpga=[0, 1, 0, 1, 0, 1], channel=[1, 70, 65, 3, 130, 138],
                             orbit=[1, 2, 3, 4, 5, 6], bx=[0] * 6, tdc=[0] * 6)
    by_fpga = {k: (p, sub.rows.orbit.tolist()) for p, k, sub in split_by_key(Chunk(rows), "fpga", 4)}
    assert by_fpga == {b"0": (0, [1, 3, 5]), b"1": (1, [2, 4, 6])}
    by_chamber = {k: (p, sub.rows.orbit.tolist()) for p, k, sub in split_by_key(Chunk(rows), "chamber", 4)}
    # special channels (>= 128) ride with their FPGA's first chamber
    assert by_chamber == {b"0": (0, [1, 5]), b"1": (1, [3]), b"2": (2, [4, 6]), b"3": (3, [2])}
    with pytest.raises(ValueError):
        split_by_key(Chunk(rows), "layer", 4)


@pytest.mark.parametrize("fmt,key", [("csv", "chamber"), ("daq64", "fpga"), ("daq64", "chamber")])
def test_four_partition_replay_gives_the_whole_file_figures(broker, topics, fmt, key):
    cfg = load_config({}, env={})
    ensure_topics(cfg, broker, {topics["hits_topic"]: 4})
    sent = emulate(Producer({"bootstrap.servers": broker, "linger.ms": 5}), topics["hits_topic"],
                   file_chunks([str(RUN_CSV)]), rate=None, fmt=fmt, rows_per_message=None if fmt == "csv" else 997,
                   progress=False, partitions=4, key=key)
    assert sent.rows == 159_616
    ends = partition_ends(cfg, broker, topics["hits_topic"])
    assert len(ends) == 4 and sum(1 for _, high in ends.values() if high > 0) == (4 if key == "chamber" else 2)
    c = Consumer({"bootstrap.servers": broker, "group.id": "peek"})
    c.assign([TopicPartition(topics["hits_topic"], 3 if key == "chamber" else 1, 0)])
    keys = {m.key() for m in c.consume(50, 5) if not m.error()}
    c.close()
    assert keys == {b"3" if key == "chamber" else b"1"}

    proc = process_all(broker, topics)
    ds = read_results(broker, topics["monitor_topic"])
    exp = expected_products(RUN_CSV)
    assert exp["per_chamber"] == [24_253, 35_907, 60_564, 36_572]
    assert_matches(ds, exp)
    assert int(ds.rows.sum()) == 159_616 and int(ds.rejected.sum()) == 0 and int(ds.late_hits.sum()) == 0
    assert len(set(ds.window_id.values)) == ds.sizes["time"] == proc.publisher.published
