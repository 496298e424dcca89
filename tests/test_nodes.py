"""streamz nodes without Kafka: a failing step turns its batch into counted dead letters."""

from streamz import Stream

import dtlive.nodes as nodes
from dtlive.nodes import Batch


def test_a_batch_that_breaks_decoding_is_counted_and_dead_lettered_and_the_graph_goes_on(monkeypatch):
    src = Stream()
    dec = src.decode_hits()
    windows = dec.clean_hits().event_windows(window_s=2, lateness_s=0)
    real_decode = nodes.decode

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(nodes, "decode", broken)
    src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,6,101,0,0"], "csv"))
    state, rejects = windows.checkpoint()
    assert dec.errors == 1
    assert [r.reason for r in rejects] == ["error", "error"] and "boom" in rejects[0].detail
    assert {k: v for k, v in state["pending_counts"].items() if v} == {"rows": 2, "rejected.error": 2}

    monkeypatch.setattr(nodes, "decode", real_decode)  # the graph still works afterwards
    out = windows.histogram().sink_to_list()
    src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,6,900000,0,0"], "csv", first_offset=2))
    assert [int(ds.total_hits) for ds in out] == [1]
