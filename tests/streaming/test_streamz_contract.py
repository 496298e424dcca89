"""dtlive's nodes keep streamz's contract, in graphs built from streamz's own sources and sinks.

Metadata travels with the data and the window node retains it while a batch is in use (streamz's
reference counting); no node changes its input; the Kafka source connects only when started; the
nodes are found through streamz's plug-in entry points. The broker test runs streamz's own
``from_kafka_batched`` through dtlive's nodes and reads the consumer group's committed offsets.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tomllib
from collections import Counter

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from datafiles import ROOT
from streamz import RefCounter, Source, Stream
from streamz.core import sync
from waiting import wait_for

from dtlive.config import load_config
from dtlive.core import detector as det
from dtlive.core.decode import decode
from dtlive.kafka.clients import ensure_topics
from dtlive.streaming import nodes
from dtlive.streaming.nodes import Batch

HIT_W0 = b"2,0,5,100,7,3"  # orbit 100: window 0 of 2 s windows
ANCILLARY = b"3,0,0,120,0,0"
FAR = b"2,0,5,4000000000,7,3"  # far ahead of everything: held back for want of evidence
HIT_W1 = b"2,0,5,30000,7,3"  # window 1: closes window 0 (no lateness allowance)


class Capture(Stream):
    """Records what reaches it with the metadata it came with (a sink that keeps the metadata)."""

    def __init__(self, upstream, **kwargs):
        self.seen: list[tuple[object, list]] = []
        super().__init__(upstream, **kwargs)

    def update(self, x, who=None, metadata=None):
        self.seen.append((x, list(metadata or [])))


def refs_of(metadata: list[dict]) -> set[int]:
    return {id(m["ref"]) for m in metadata}


def hit(window: int, orbit: int = 100) -> bytes:
    """A csv hit row at ``orbit`` within 2 s window ``window``."""
    return b"2,0,5,%d,7,3" % (window * det.orbits_for_seconds(2) + orbit)


def windows_graph(lateness_s: float = 0, **kwargs):
    src = Stream()
    windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=lateness_s, **kwargs)
    return src, windows, Capture(windows)


def emit(src, payloads, first_offset, ref: RefCounter):
    src.emit(Batch.from_payloads(payloads, "csv", first_offset=first_offset), metadata=[{"ref": ref}])


def test_metadata_is_retained_while_its_hits_sit_in_an_open_window_and_goes_out_with_the_window():
    src, windows, out = windows_graph(lateness_s=1)  # half a window: window 0 stays open in window 1's first half
    a, b, c = RefCounter(), RefCounter(), RefCounter()
    emit(src, [HIT_W0, ANCILLARY], 0, a)
    emit(src, [hit(0, 200), hit(1)], 2, b)  # hits in window 0 and in window 1
    assert (a.count, b.count) == (1, 1) and out.seen == []  # both held by open windows
    emit(src, [hit(3)], 4, c)  # closes windows 0 and 1
    (w0, meta0), (w1, meta1) = out.seen
    assert (w0.id, w1.id) == (0, 1)
    assert refs_of(meta0) == {id(a), id(b), id(c)}  # c: its counts travel with the first window closed
    assert refs_of(meta1) == {id(b)}
    assert w0.meta["counts"]["ancillary"] == 1 and w0.meta["counts"]["rows"] == 5
    assert (a.count, b.count, c.count) == (0, 0, 1)  # c's hit sits in the open window 3
    windows.flush()
    assert out.seen[-1][0].id == 3 and refs_of(out.seen[-1][1]) == {id(c)} and c.count == 0


def test_metadata_is_released_in_arrival_order():
    """A batch finished early is kept until the batches before it are finished: a source committing
    offsets on release never commits past a batch still in use."""
    src, windows, out = windows_graph()
    a, b = RefCounter(), RefCounter()
    emit(src, [HIT_W1], 0, a)  # window 1 stays open
    emit(src, [HIT_W0], 1, b)  # window 0 opens and closes at once (the watermark is beyond it)
    assert [w.id for w, _ in out.seen] == [0] and refs_of(out.seen[0][1]) == {id(a), id(b)}
    assert (a.count, b.count) == (1, 1)
    windows.flush()
    assert (a.count, b.count) == (0, 0)


def test_metadata_of_a_batch_with_held_rows_waits_for_the_window_that_carries_their_verdict():
    src, windows, out = windows_graph(max_jump_s=30)
    b, c, d = RefCounter(), RefCounter(), RefCounter()
    src.emit(Batch.from_payloads([hit(1)], "csv"))  # no metadata: window 1 opens
    emit(src, [hit(0, 200), FAR], 1, b)  # window 0 opens and closes at once; the far row is held back
    assert [w.id for w, _ in out.seen] == [0] and refs_of(out.seen[0][1]) == {id(b)}
    assert b.count == 1  # its held row is undecided
    emit(src, [hit(0, 300)], 3, c)  # back below (and late): the held row is a spike, rejected
    assert b.count == 1  # the reject is not out yet
    emit(src, [hit(2)], 4, d)  # closes window 1, which carries the rejects
    w1, meta = out.seen[1]
    assert sorted((r.reason, r.offset) for r in w1.meta["rejects"]) == [("late", 3), ("orbit_out_of_range", 2)]
    assert refs_of(meta) == {id(b), id(c), id(d)}  # the batches whose rejects and counts it carries
    assert (b.count, c.count, d.count) == (0, 0, 1)


def test_a_batch_of_only_rejects_is_released_with_the_next_window():
    src, windows, out = windows_graph()
    a, b, c = RefCounter(), RefCounter(), RefCounter()
    emit(src, [HIT_W0], 0, a)
    emit(src, [b"not,a,row"], 1, b)
    assert b.count == 1  # its reject waits for a window
    emit(src, [HIT_W1], 2, c)
    ((w0, meta),) = out.seen
    assert [r.reason for r in w0.meta["rejects"]] and id(b) in refs_of(meta)
    assert (a.count, b.count, c.count) == (0, 0, 1)


def test_the_other_nodes_pass_metadata_through():
    src = Stream()
    decoded = src.dt_payload_batch(fmt="csv").dt_decode_hits()
    cleaned = decoded.dt_clean_hits()
    windows = cleaned.dt_event_windows(window_s=2, lateness_s=0)
    taps = [Capture(decoded), Capture(cleaned), Capture(windows.dt_histogram())]
    ref = RefCounter()
    src.emit([HIT_W0, HIT_W1], metadata=[{"ref": ref}])
    for tap in taps:
        ((_, metadata),) = tap.seen
        assert refs_of(metadata) == {id(ref)}
    assert ref.count == 1  # the hit of window 1 keeps it


def test_no_node_changes_its_input_a_second_branch_sees_the_original_rows():
    payloads = [HIT_W0, ANCILLARY, b"2,1,70,900000,3,9"]
    batch = Batch.from_payloads(payloads, "csv")
    src = Stream()
    decoded = src.dt_decode_hits()
    windows = decoded.dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0)  # first branch, wired first
    products = windows.dt_histogram().sink_to_list()
    second = decoded.sink_to_list()  # second branch off the decoder
    batches = src.sink_to_list()
    src.emit(batch)
    windows.flush()
    assert [int(ds.total_hits) for ds in products] == [1, 1]  # the first branch cleaned and windowed

    (d,) = second
    expected = decode(payloads, "csv", batch.partitions, batch.offsets).rows
    for col in ("head", "fpga", "channel", "orbit", "bx", "tdc", "partition", "offset"):
        assert np.array_equal(getattr(d.rows, col), getattr(expected, col)), col
    assert len(d.rows) == 3 and d.counts == Counter({"rows": 3})  # ancillary row still there, not counted away
    assert batches == [batch] and batch.payloads == payloads and batch.positions == {0: 3}


def test_streamz_from_iterable_and_sink_drive_the_nodes():
    src = Stream.from_iterable([[HIT_W0, ANCILLARY], [HIT_W1]])
    windows = src.dt_payload_batch(fmt="csv").dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2,
                                                                                                  lateness_s=0)
    totals, counts = [], []
    windows.sink(lambda w: counts.append(dict(w.meta["counts"])))
    windows.dt_histogram().sink(lambda ds: totals.append(int(ds.total_hits)))
    src.start()
    wait_for(lambda: src.stopped, 10, "from_iterable to run through its items")
    assert totals == [1] and counts[0]["rows"] == 3 and counts[0]["ancillary"] == 1


def test_making_the_kafka_source_touches_nothing():
    """No consumer and no connection until start() or poll(): an address nothing listens on is no error."""
    src = Stream.dt_from_kafka_batched_consumer("dt.hits", {"bootstrap.servers": "127.0.0.1:9"})
    src.dt_decode_hits().dt_clean_hits().dt_event_windows().sink(print)
    assert src.consumer is None and src.partitions == [] and src.start_offsets == {}
    assert src.input_waiting() is None and src.high_watermarks() == {}
    src.close()


# ------------------------------------------------------------------ plug-in registration

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PLUGINS = {g: eps for g, eps in PROJECT["entry-points"].items() if g.startswith("streamz.")}


def test_every_node_is_declared_as_a_prefixed_streamz_plugin():
    classes = {name: obj for name, obj in vars(nodes).items()
               if isinstance(obj, type) and issubclass(obj, Stream) and obj.__module__ == nodes.__name__}
    sources = {name for name, obj in classes.items() if issubclass(obj, Source)}
    assert PLUGINS["streamz.sources"] == {name: f"dtlive.streaming.nodes:{name}" for name in sources}
    assert PLUGINS["streamz.nodes"] == {name: f"dtlive.streaming.nodes:{name}" for name in set(classes) - sources}
    assert all(name.startswith("dt_") for eps in PLUGINS.values() for name in eps)


def test_streamz_finds_the_nodes_through_its_entry_points_without_dtlive_imported(tmp_path):
    """The project's declared entry points, installed as dtlive's metadata, make ``Stream.dt_*`` work in a
    fresh interpreter that imports only streamz (they shadow an installed dtlive's)."""
    dist = tmp_path / f"dtlive-{PROJECT['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: dtlive\nVersion: {PROJECT['version']}\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items()) + "\n"
        for group, eps in PLUGINS.items()))
    script = f"""
import sys, warnings
warnings.filterwarnings("error", message="Can't add")  # streamz only warns about a name collision
from streamz import Stream
assert not [m for m in sys.modules if m.startswith("dtlive")]
src = Stream()
windows = src.dt_payload_batch(fmt="csv").dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0)
out = windows.dt_histogram().sink_to_list()
src.emit([{HIT_W0!r}, {HIT_W1!r}])
kafka = Stream.dt_from_kafka_batched_consumer("dt.hits", {{"bootstrap.servers": "127.0.0.1:9"}})
import dtlive.streaming.nodes
assert dtlive.streaming.nodes.__file__.startswith({str(ROOT)!r})
print(int(out[0].total_hits), type(kafka).__name__, type(windows).__name__)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "dt_from_kafka_batched_consumer", "dt_event_windows"]


# ------------------------------------------------------------------ the real broker


def committed(broker: str, group: str, topic: str) -> int:
    """The group's committed offset of partition 0 (negative: none)."""
    c = Consumer({"bootstrap.servers": broker, "group.id": group, "enable.auto.commit": False})
    try:
        return c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        c.close()


def test_streamz_kafka_source_commits_a_batch_only_once_its_window_is_out(broker, topics):
    topic, group = topics["hits_topic"], topics["group_id"]
    ensure_topics(load_config({}, env={}), broker, [topic])
    producer = Producer({"bootstrap.servers": broker})

    def send(value):  # one record per write: Tansu's end offsets lag a multi-record write
        producer.produce(topic, value)
        assert producer.flush(10) == 0

    src = Stream.from_kafka_batched(topic, {"bootstrap.servers": broker, "group.id": group,
                                            "auto.offset.reset": "earliest"}, poll_interval=0.1)
    batches = Capture(src)  # what streamz emits, with the reference its commit waits for
    windows = src.dt_payload_batch(fmt="csv").dt_decode_hits().dt_clean_hits().dt_event_windows(
        window_s=2, lateness_s=0)
    out = windows.sink_to_list()
    src.start()
    try:
        send(HIT_W0)
        wait_for(lambda: windows.state.open_ids == [0], 30, "the first batch in window 0")
        ((values, (first,)),) = batches.seen
        assert values == [HIT_W0] and first["ref"].count == 1  # held by the open window
        assert committed(broker, group, topic) < 0  # so nothing was committed

        send(HIT_W1)  # closes window 0
        wait_for(lambda: len(out) == 1, 30, "window 0 to close")
        second = batches.seen[1][1][0]
        assert first["ref"].count == 0 and second["ref"].count == 1
        wait_for(lambda: committed(broker, group, topic) >= 0, 30, "the first batch's commit")
        assert committed(broker, group, topic) == 1  # the first batch only: window 1 still holds the second

        src.loop.add_callback(windows.flush)  # on streamz's loop, where the graph runs
        wait_for(lambda: len(out) == 2, 30, "window 1 to be flushed")
        wait_for(lambda: committed(broker, group, topic) == 2, 30, "the second batch's commit")
    finally:
        src.stop()

        async def close_consumer():  # on the loop, once the poll loop saw the stop (it looks every 0.1 s)
            await asyncio.sleep(0.5)
            src.upstream.consumer.close()

        sync(src.loop, close_consumer)


def test_a_graph_is_built_before_its_topic_exists_and_connects_at_its_first_poll(broker, topics):
    topic = topics["hits_topic"]
    src = Stream.dt_from_kafka_batched_consumer(topic, {"bootstrap.servers": broker, "group.id": topics["group_id"]})
    windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0)
    out = windows.sink_to_list()
    ensure_topics(load_config({}, env={}), broker, [topic])
    producer = Producer({"bootstrap.servers": broker})
    for v in (HIT_W0, HIT_W1):
        producer.produce(topic, v, headers=[("format", b"csv")])
    producer.flush(10)
    try:
        wait_for(lambda: src.poll(timeout=0.5) >= 0 and out, 30, "window 0 to close")
        assert src.start_offsets == {0: -2} and src.positions == {0: 2}  # -2: librdkafka's "beginning"
        assert [w.id for w in out] == [0] and len(out[0].hits) == 1
    finally:
        src.close()
