"""streamz nodes without Kafka: a failing step turns its batch into counted dead letters."""

from streamz import Stream

import dtlive.streaming.nodes as nodes
from dtlive.streaming.nodes import Batch


def test_a_batch_that_breaks_decoding_is_counted_and_dead_lettered_and_the_graph_goes_on(monkeypatch):
    src = Stream()
    dec = src.dt_decode_hits()
    windows = dec.dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0)
    real_decode = nodes.decode

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(nodes, "decode", broken)
    src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,6,101,0,0"], "csv"))
    state, rejects = windows.checkpoint()
    assert dec.errors == 1
    assert [r.reason for r in rejects] == ["error", "error"] and "boom" in rejects[0].detail
    assert {k: v for k, v in state.pending_counts.items() if v} == {"rows": 2, "rejected.error": 2}

    monkeypatch.setattr(nodes, "decode", real_decode)  # the graph still works afterwards
    out = windows.dt_histogram().sink_to_list()
    src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,6,900000,0,0"], "csv", first_offset=2))
    assert [int(ds.total_hits) for ds in out] == [1]


def test_orbit_epoch_from_a_header_replaces_the_provisional_one_until_a_window_closes():
    src = Stream()
    windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0)
    out = windows.dt_histogram().sink_to_list()
    first = Batch.from_payloads([b"2,0,5,100,7,3"], "csv")  # no epoch header: broker time anchors for now
    src.emit(first)
    provisional = windows.orbit_epoch
    assert abs(provisional - first.timestamps_ms[0] / 1000) < 1
    src.emit(Batch.from_payloads([b"2,0,5,101,7,3"], "csv", first_offset=1, orbit_epoch=1.7e9))
    assert windows.orbit_epoch == 1.7e9  # the DAQ's epoch wins
    src.emit(Batch.from_payloads([b"2,0,5,900000,7,3"], "csv", first_offset=2))  # closes window 0
    assert out[0].attrs["window_start"] == "2023-11-14T22:13:20.000Z"  # 1.7e9 s + orbit 0
    src.emit(Batch.from_payloads([b"2,0,5,900001,7,3"], "csv", first_offset=3, orbit_epoch=1.8e9))
    assert windows.orbit_epoch == 1.7e9  # once windows are out, the time axis no longer moves


def test_a_failing_sink_is_reported_as_itself_not_as_bad_input():
    src = Stream()
    windows = src.dt_decode_hits().dt_clean_hits().dt_event_windows(window_s=2, lateness_s=0)

    def broken_sink(window):
        raise ValueError("my sink is broken")

    windows.sink(broken_sink)
    src.emit(Batch.from_payloads([b"2,0,5,100,7,3"], "csv"))
    try:
        src.emit(Batch.from_payloads([b"2,0,5,900000,7,3"], "csv", first_offset=1))  # closes window 0
    except ValueError as exc:
        assert "my sink is broken" in str(exc)
    else:
        raise AssertionError("the sink's exception was swallowed")
    assert windows.errors == 0  # not counted as a failure of the window node, nothing dead-lettered
    state, rejects = windows.checkpoint()
    assert rejects == []
