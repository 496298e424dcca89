"""The whole pipeline against the real embedded broker: emulator -> processor -> dt.monitor -> xarray.

Expected figures are computed independently here with pandas from the shared real data.
"""

from __future__ import annotations

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from contracts import read_messages, read_results, valid_dead_letter
from datafiles import RUN_CSV, SAMPLE_CSV
from pipeline_runs import assert_matches, expected_products, process_all, produce_file
from streamz import Stream

from dtlive.config import load_config
from dtlive.core.rows import Rows
from dtlive.core.windows import Window
from dtlive.kafka.clients import ensure_topics
from dtlive.kafka.emulator import emulate, simulated_chunks
from dtlive.streaming.processor import Processor

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("fmt", ["csv", "daq64"])
def test_replay_of_real_run_sums_to_whole_file(broker, topics, fmt):
    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    sent = produce_file(broker, topics["hits_topic"], RUN_CSV, fmt, rows_per_message=None if fmt == "csv" else 997)
    assert sent.rows == 159_616
    proc = process_all(broker, topics)
    ds = read_results(broker, topics["monitor_topic"])
    exp = expected_products(RUN_CSV)
    assert exp["total"] == 159_616 and exp["per_chamber"] == [24_253, 35_907, 60_564, 36_572]
    assert_matches(ds, exp)
    assert int(ds.rows.sum()) == 159_616 and int(ds.rejected.sum()) == 0
    ids = ds.window_id.values
    assert len(set(ids)) == len(ids) == proc.publisher.published
    # the ~210 s gap leaves no window behind: windows are event-time, aligned to orbit multiples
    assert np.all(ds.first_orbit.values % (ds.last_orbit.values[0] - ds.first_orbit.values[0] + 1) == 0)
    assert (np.diff(ds.first_orbit.values) > 0).all()


def test_stream_sample_with_ancillary_floats(broker, topics):
    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    produce_file(broker, topics["hits_topic"], SAMPLE_CSV, "csv-batch", rows_per_message=10)
    process_all(broker, topics)
    ds = read_results(broker, topics["monitor_topic"])
    exp = expected_products(SAMPLE_CSV)
    assert_matches(ds, exp)
    assert int(ds.ancillary.sum()) == exp["ancillary"] > 0
    assert int(ds.rows.sum()) == exp["rows"] == 74
    assert int(ds.rejected.sum()) == 0


def test_bad_input_is_dead_lettered_with_reasons_and_stream_continues(broker, topics):
    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    p = Producer({"bootstrap.servers": broker})
    good = [b"2,0,5,3387200000,100,3", b"2,1,70,3387200001,5,7", b"4,1,0,3387200002,0,-0.573730"]
    bad = {b"2,0,5,abc,1,1": "non_numeric", b"2,0,5": "field_count", b"": "empty", b"2,9,5,3387200000,1,1":
           "out_of_range", b"7,0,0,0,0,0": "unknown_head"}
    for v in [*good[:1], *bad, *good[1:]]:
        p.produce(topics["hits_topic"], v, headers=[("format", b"csv")])
    p.produce(topics["hits_topic"], b"\x00" * 11, headers=[("format", b"daq64")])  # 1 word + 3 bytes
    p.produce(topics["hits_topic"], b"whatever", headers=[("format", b"parquet")])
    p.flush(10)
    process_all(broker, topics)
    ds = read_results(broker, topics["monitor_topic"])
    assert int(ds.total_hits.sum()) == 2 and int(ds.ancillary.sum()) == 2  # the zero daq64 word is HEAD 0
    c = Consumer({"bootstrap.servers": broker, "group.id": "t", "isolation.level": "read_committed"})
    c.assign([TopicPartition(topics["rejected_topic"], 0, 0)])
    got = {}
    for m in c.consume(100, 5):
        h = valid_dead_letter(m)
        got[m.value()] = h["reason"]
        assert h["source_topic"] == topics["hits_topic"] and int(h["source_offset"]) >= 0
    c.close()
    assert {k: v for k, v in got.items() if k in bad} == bad
    assert got[b"\x00" * 3] == "truncated_word" and got[b"whatever"] == "unknown_format"
    total_rejects = sum(ds.rejected.values)
    assert total_rejects == len(got) == 7
    by_reason = ds.rejected_by_reason.sum("time")
    assert {str(r): int(n) for r, n in zip(by_reason.reason.values, by_reason.values)} == {
        **{reason: 1 for reason in bad.values()}, "truncated_word": 1, "unknown_format": 1}


def test_simulated_drift_time_box_through_the_pipeline(broker, topics):
    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    emulate(producer, topics["hits_topic"], simulated_chunks(seed=3), rate=None, fmt="daq64", limit=60_000,
            progress=False)
    process_all(broker, topics)
    ds = read_results(broker, topics["monitor_topic"]).sum("time")
    drift = ds.drift_time_ns.sum("chamber")
    centres = drift.drift_time.values
    inside = drift.where((centres > 0) & (centres < 400), 0).sum()
    assert inside / (drift.sum() + ds.drift_time_ns_underflow.sum() + ds.drift_time_ns_overflow.sum()) > 0.9
    mid = float(drift.sel(drift_time=slice(100, 300)).mean())
    assert float(drift.sel(drift_time=slice(10, 40)).mean()) > 0.5 * mid  # sharp rising edge near 0
    assert float(drift.sel(drift_time=slice(350, 380)).mean()) > 0.5 * mid  # still high just below ~390 ns
    assert float(drift.sel(drift_time=slice(-100, -30)).mean()) < 0.1 * mid
    assert float(drift.sel(drift_time=slice(420, 500)).mean()) < 0.1 * mid
    assert int(ds.scint_channel_occupancy.sum()) > 0


def test_users_own_streamz_graph_from_dtlive_nodes(broker, topics):
    """The documented notebook recipe: wire dtlive nodes into a custom graph on the real broker."""
    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    produce_file(broker, topics["hits_topic"], RUN_CSV, "daq64", rows_per_message=5000)
    src = Stream.dt_from_kafka_batched_consumer(topics["hits_topic"], {"bootstrap.servers": broker,
                                                                       "auto.offset.reset": "earliest"})
    windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0.2)
    noisy = windows.dt_histogram().map(lambda ds: ds.channel_occupancy.stack(ch=("chamber", "channel"))
                                    .pipe(lambda o: o.tdc_channel.values[int(o.values.argmax())]))
    found = noisy.sink_to_list()
    while src.poll(timeout=1.0):
        pass
    windows.flush()
    src.close()
    assert len(found) > 10
    assert all(0 <= ch < 128 for ch in found)


def test_source_cuts_a_consume_call_into_pieces_of_bounded_bytes_and_does_not_wait_out_its_timeout(broker, topics):
    """Big daq64 backlogs are decoded in pieces of <= max_batch_bytes; a backlog is taken at once."""
    import time

    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    produce_file(broker, topics["hits_topic"], RUN_CSV, "daq64", rows_per_message=1000)  # 8,000 B per message
    src = Stream.dt_from_kafka_batched_consumer(topics["hits_topic"], {"bootstrap.servers": broker,
                                                                       "auto.offset.reset": "earliest"},
                                                batch_size=1000, poll_timeout=30.0, max_batch_bytes=20_000)
    batches = src.sink_to_list()
    windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0.2)
    totals = windows.dt_histogram().map(lambda ds: int(ds.total_hits)).sink_to_list()
    t0 = time.monotonic()
    polls = 0
    while sum(len(b.payloads) for b in batches) < 160 and polls < 50:
        polls += 1
        src.poll()
    took = time.monotonic() - t0
    windows.flush()
    src.close()
    assert sum(totals) == 159_616
    assert all(sum(map(len, b.payloads)) <= 20_000 for b in batches)
    assert max(len(b.payloads) for b in batches) == 2 and len(batches) >= 80
    offsets = np.concatenate([b.offsets for b in batches])
    assert offsets.tolist() == list(range(160))  # every message once, in order
    assert all(b.positions == {0: int(b.offsets[-1]) + 1} for b in batches)
    assert took < 30.0  # the backlog came without waiting out the 30 s poll timeout


def test_users_graph_runs_in_the_background_with_start(broker, topics):
    """``src.start()`` polls on streamz's event loop; idle windows close by themselves."""
    import time

    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    produce_file(broker, topics["hits_topic"], SAMPLE_CSV, "csv")
    src = Stream.dt_from_kafka_batched_consumer(topics["hits_topic"], {"bootstrap.servers": broker,
                                                                       "auto.offset.reset": "earliest"})
    windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0.2, idle_s=0.5)
    totals = windows.dt_histogram().map(lambda ds: int(ds.total_hits)).sink_to_list()
    src.start()
    deadline = time.monotonic() + 20
    expected = expected_products(SAMPLE_CSV)["total"]
    while sum(totals) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    src.close()
    assert sum(totals) == expected


def test_results_read_back_one_window_and_stacked(broker, topics):
    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    produce_file(broker, topics["hits_topic"], SAMPLE_CSV, "csv")
    process_all(broker, topics)
    msgs = read_messages(broker, topics["monitor_topic"])
    assert msgs and all(m["schema"] == "dtlive.monitor/1" for m in msgs)
    prov = msgs[0]["provenance"]
    assert prov["inputs"][0]["topic"] == topics["hits_topic"] and prov["config_hash"] and prov["run_id"]
    one = read_results(broker, topics["monitor_topic"], last=1)
    assert one.sizes["time"] == 1 and one.window_id.values[0] == msgs[-1]["window"]["id"]


def test_results_command_writes_netcdf(broker, topics, tmp_path, capsys):
    import json

    import xarray as xr

    from dtlive.deploy.cli import main

    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    produce_file(broker, topics["hits_topic"], SAMPLE_CSV, "csv")
    process_all(broker, topics)
    out = tmp_path / "windows.nc"
    argv = ["--bootstrap", broker, "results", "--topic", topics["monitor_topic"], "--last", "0", "--netcdf", str(out)]
    assert main(argv) == 0
    written = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    back = xr.load_dataset(out)
    assert written["windows"] == back.sizes["time"] >= 1
    assert int(back.total_hits.sum()) == expected_products(SAMPLE_CSV)["total"]
    assert json.loads(str(back.provenance.values[0]))["run_id"]


def test_partition_ends_is_the_true_end_after_batched_writes(broker, topics):
    """Tansu's ListOffsets omits the last multi-record batch; partition_ends must not (it ended replays early)."""
    from dtlive.kafka.clients import partition_ends

    cfg = load_config({}, env={})
    ensure_topics(cfg, broker, [topics["hits_topic"]])
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 50})
    for i in range(5_000):
        producer.produce(topics["hits_topic"], b"2,0,1,%d,1,1" % i)
    producer.flush(30)
    assert partition_ends(cfg, broker, topics["hits_topic"]) == {0: (0, 5_000)}
    assert partition_ends(cfg, broker, "no-such-topic-" + topics["group_id"]) == {}


def test_batch_from_messages_reads_each_messages_format_and_the_first_epoch(broker, topics):
    """Headers are read once per distinct set: formats stay per message, the epoch is the first message's."""
    from dtlive.streaming.nodes import Batch

    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    p = Producer({"bootstrap.servers": broker})
    sent = [(b"2,0,5,100,7,3", [("format", b"csv"), ("orbit_epoch", b"1700000000.5")]),
            (b"2,0,6,101,7,3", [("format", b"csv")]),
            (b"2,0,7,102,7,3", None),
            (None, [("format", b"csv")]),
            (b"\x00" * 8, [("format", b"daq64"), ("orbit_epoch", b"1800000000.0")]),
            (b"2,0,8,103,7,3", [("format", b"csv"), ("orbit_epoch", b"not a number")])]
    for value, headers in sent:
        p.produce(topics["hits_topic"], value, headers=headers)
    p.flush(10)
    c = Consumer({"bootstrap.servers": broker, "group.id": "t-batch", "enable.partition.eof": False})
    c.assign([TopicPartition(topics["hits_topic"], 0, 0)])
    msgs = []
    for _ in range(50):
        msgs += [m for m in c.consume(10, 0.2) if m.error() is None]
        if len(msgs) >= len(sent):
            break
    c.close()
    b = Batch.from_messages(msgs, topics["hits_topic"])
    assert b.formats == ["csv", "csv", None, "csv", "daq64", "csv"]
    assert b.payloads == [v or b"" for v, _ in sent]
    assert b.orbit_epoch == 1700000000.5
    assert b.offsets.tolist() == list(range(6)) and b.positions == {0: 6}
    assert Batch.from_messages(msgs[1:4], topics["hits_topic"]).orbit_epoch is None
    assert Batch.from_messages(msgs[4:], topics["hits_topic"]).orbit_epoch == 1800000000.0


def test_a_backlog_shares_commits_among_windows_and_a_live_window_commits_at_once(broker, topics):
    """Reading a backlog (full consume calls) windows wait <= window_delay_s for one commit; results stay whole."""

    ensure_topics(load_config({}, env={}), broker, [topics["hits_topic"]])
    produce_file(broker, topics["hits_topic"], RUN_CSV, "daq64", rows_per_message=100)  # 1,597 messages
    cfg = load_config({"bootstrap": broker, **topics}, env={})
    proc = Processor(cfg, broker, from_beginning=True, batch_size=50)
    commits = []
    commit = proc.publisher.commit
    proc.publisher.commit = lambda: commits.append(proc.publisher.windows_in_transaction) or commit()
    proc.run(until_end=True, max_seconds=120)
    assert sum(commits) == proc.publisher.published > 10
    assert max(commits) > 1 and len([c for c in commits if c]) < proc.publisher.published
    assert int(read_results(broker, topics["monitor_topic"]).total_hits.sum()) == 159_616
    live = proc.publisher  # a window closed while nothing more is read: committed at once, not after the delay
    live.window_delay_s = 60.0
    live.publish(Window(10**6, 0, 0, Rows.empty(), {}))
    assert live.windows_in_transaction == 1
    assert live.due(backlog=False) and not live.due(backlog=True)
    live.window_delay_s = 0.0
    assert live.due(backlog=True)
    live.producer.abort_transaction(10)
    proc.close()
