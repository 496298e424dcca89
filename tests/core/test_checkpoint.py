"""The checkpoint record: its wire form, records of older versions, and resuming from a published window."""

import json

from streamz import Stream

from dtlive.config import load_config
from dtlive.core.checkpoint import Checkpoint
from dtlive.core.messages import message_bytes
from dtlive.streaming.graph import window_graph
from dtlive.streaming.nodes import Batch, window_message

CFG = load_config({"window_s": 2, "lateness_s": 0}, env={})


def running_graph():
    """A window graph that closed window 0 and holds window 3 open, with one far-ahead row held back."""
    src = Stream()
    windows = window_graph(src, CFG)
    out = windows.sink_to_list()
    src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"x"], "csv", partition=1))
    src.emit(Batch.from_payloads([b"2,0,5,70000,7,3", b"2,0,5,4000000000,7,3"], "csv", partition=1, first_offset=2))
    return windows, out


def test_a_window_nodes_checkpoint_survives_its_wire_form_with_partitions_as_strings():
    windows, out = running_graph()
    state, _ = windows.checkpoint()
    assert [w.id for w in out] == [0] and state.last_window == 0 and state.held_offsets == {1: [3]}
    wire = json.loads(state.to_bytes())
    assert set(wire["positions"]) == set(wire["restart_offsets"]) == set(wire["held_offsets"]) == {"1"}
    assert Checkpoint.from_json(wire) == state


def test_a_record_in_the_committed_form_reads_and_writes_back_unchanged():
    record = {"last_window": 41, "window_orbits": 22483, "positions": {"0": 812, "3": 90},
              "restart_offsets": {"0": 800, "3": 77}, "pending_counts": {"rows": 12, "rejected.late": 2},
              "orbit_epoch": 1.7e9, "held_offsets": {"3": [88, 89]}, "processor": "dtlive-processor",
              "config_hash": "0f3a", "input_topic": "dt.hits", "run_id": "a1b2c3", "time": 1.7e9 + 5}
    c = Checkpoint.from_json(json.loads(json.dumps(record)))
    assert c.positions == {0: 812, 3: 90} and c.held_offsets == {3: [88, 89]} and c.last_window == 41
    assert c.to_json() == record


def test_older_and_partial_records_read_with_defaults():
    dask_record = {"last_window": 5, "window_orbits": 22483, "positions": {"0": 10}, "restart_offsets": {"0": 4},
                   "pending_counts": {}, "orbit_epoch": None, "processor": "p", "config_hash": "h",
                   "input_topic": "dt.hits", "run_id": "r", "time": 3.0}  # no held_offsets
    c = Checkpoint.from_json(dask_record)
    assert (c.held_offsets, c.orbit_epoch, c.restart_offsets) == ({}, None, {0: 4})
    sparse = Checkpoint.from_json({"positions": None, "pending_counts": None, "future_field": [1]})
    assert sparse == Checkpoint()
    assert (sparse.last_window, sparse.time) == (-1, 0.0)


def test_a_published_windows_provenance_says_where_to_resume():
    windows, out = running_graph()
    prov = {"topic": "dt.hits", "processor": "p", "config_hash": CFG.config_hash, "run_id": "r1"}
    msg = json.loads(message_bytes(window_message(out[0], provenance=prov)))
    c = Checkpoint.from_provenance(msg["window"]["id"], msg["provenance"])
    assert c.last_window == 0 and c.config_hash == CFG.config_hash and c.processor == "p"
    assert c.positions == out[0].meta["positions"] and c.restart_offsets == out[0].meta["restart_offsets"]
    assert c.orbit_epoch == out[0].meta["orbit_epoch"] and c.pending_counts == {}

    src = Stream()  # a graph resumed from it takes no row before the positions again
    resumed = window_graph(src, CFG, c)
    src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"x", b"2,0,5,70000,7,3"], "csv", partition=1))
    state, rejects = resumed.checkpoint()
    assert rejects == [] and state.pending_counts.get("rows", 0) == 0 and resumed.state.last_closed == 0
