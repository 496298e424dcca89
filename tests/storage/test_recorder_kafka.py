"""Replay run 591 on the real broker: the ledger's offsets per window are exactly what the processor consumed,
the ~210 s gap is flagged automatically, and history gives back exactly the published windows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, TopicPartition
from contracts import read_messages, valid
from datafiles import RUN_CSV
from pipeline_runs import produce_file

from dtlive.config import load_config
from dtlive.core import detector as det
from dtlive.kafka.clients import ensure_topics
from dtlive.storage.history import HistoryStore
from dtlive.storage.ledger import Ledger
from dtlive.storage.recorder import Recorder
from dtlive.streaming.processor import Processor

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def replay(broker, tmp_path_factory):
    """Run 591 replayed once (one csv row per message), processed with a ledger, then recorded."""
    tmp = tmp_path_factory.mktemp("recorder")
    tag = tmp.name[-6:]
    topics = {"hits_topic": f"hits-r{tag}", "monitor_topic": f"mon-r{tag}", "rejected_topic": f"rej-r{tag}",
              "quality_topic": f"dq-r{tag}", "group_id": f"proc-r{tag}"}
    cfg = load_config({"bootstrap": broker, **topics}, env={})
    ensure_topics(cfg, broker, [cfg.hits_topic])
    produce_file(broker, cfg.hits_topic, RUN_CSV, "csv")
    ledger = Ledger(f"sqlite:///{tmp / 'ledger.sqlite'}")
    proc = Processor(cfg, broker, from_beginning=True, ledger=ledger)
    proc.run(until_end=True, max_seconds=120)
    proc.close()
    history = HistoryStore(tmp / "history")
    rec = Recorder(cfg, broker, ledger=ledger, history=history)
    rec.run(until_end=True, max_seconds=60)
    rec.close()
    return {"cfg": cfg, "ledger": ledger, "history": history, "proc": proc, "recorder": rec, "broker": broker,
            "ledger_path": tmp / "ledger.sqlite"}


@pytest.fixture
def own_ledger(replay, tmp_path):
    """A copy of the replay's ledger for a test that flags periods: what one test flags never changes another's."""
    import contextlib
    import sqlite3

    copy = tmp_path / "ledger.sqlite"
    with contextlib.closing(sqlite3.connect(replay["ledger_path"])) as src, \
            contextlib.closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    return Ledger(f"sqlite:///{copy}")


def test_ledger_offsets_per_window_are_what_the_processor_consumed(replay):
    df = pd.read_csv(RUN_CSV)  # one row per message: the row number is the offset
    df["window"] = df.ORBIT_CNT // det.orbits_for_seconds(2.0)
    expected = {int(w): (int(g.index.min()), int(g.index.max())) for w, g in df[df.HEAD == 2].groupby("window")}
    windows = replay["ledger"].windows(processor=replay["cfg"].group_id)
    got = {w["window_id"]: (w["inputs"][0]["first_offset"], w["inputs"][0]["last_offset"]) for w in windows}
    assert got == expected
    assert all(len(w["inputs"]) == 1 and w["inputs"][0]["topic"] == replay["cfg"].hits_topic for w in windows)
    # where each result landed is where the recorder read it
    c = Consumer({"bootstrap.servers": replay["broker"], "group.id": "t", "isolation.level": "read_committed"})
    c.assign([TopicPartition(replay["cfg"].monitor_topic, 0, 0)])
    landed = {valid(m)["window"]["id"]: m.offset() for m in c.consume(10_000, 5) if not m.error()}
    c.close()
    assert {w["window_id"]: w["result_offset"] for w in windows} == landed
    run = replay["ledger"].run(replay["proc"].run_id)
    assert run["status"] == "finished" and run["config_hash"] == replay["cfg"].config_hash
    assert run["inputs"] == [{"topic": replay["cfg"].hits_topic, "partition": 0, "start_offset": "beginning"}]


def test_provenance_of_a_window_in_one_call(replay):
    wid = replay["ledger"].windows(processor=replay["cfg"].group_id)[3]["window_id"]
    prov = replay["ledger"].provenance(wid, processor=replay["cfg"].group_id)
    assert prov["inputs"][0]["topic"] == replay["cfg"].hits_topic
    assert replay["cfg"].config_hash in json.dumps(prov["configuration"], default=str)
    assert prov["code"]["dtlive_versions"]


def test_the_210_s_gap_is_flagged_automatically_and_published(replay):
    orbits = np.sort(pd.read_csv(RUN_CSV).ORBIT_CNT.to_numpy())
    gaps = np.diff(orbits) * det.ORBIT_S
    biggest = float(gaps.max())
    assert 150 < biggest < 300  # the file's power cut
    periods = [p for p in replay["ledger"].periods(kind="bad") if p["reason"] == "data_gap"]
    assert len(periods) == 1
    length = (periods[0]["end"] - periods[0]["start"]).total_seconds()
    assert abs(length - biggest) < 2 * 2.0 + 1  # within the window granularity at both ends
    c = Consumer({"bootstrap.servers": replay["broker"], "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(replay["cfg"].quality_topic, 0, 0)])
    every = [valid(m) for m in c.consume(10_000, 5) if not m.error()]
    c.close()
    msgs = [m for m in every if m["schema"] == "dtlive.quality/1"]  # the verdicts (quality/2) share the topic
    assert [m["reason"] for m in msgs if m["reason"] == "data_gap"] == ["data_gap"]
    assert {m["schema"] for m in every} == {"dtlive.quality/1", "dtlive.quality/2"}


def test_history_returns_exactly_the_published_windows_and_excludes_bad_ones(replay, own_ledger):
    published = sorted(m["window"]["id"] for m in read_messages(replay["broker"], replay["cfg"].monitor_topic))
    ds = replay["history"].load()
    assert ds.window_id.values.tolist() == published
    assert int(ds.total_hits.sum()) == 159_616
    starts = ds.time.values.astype("datetime64[ms]").astype("int64") / 1000
    ends = ds.window_end.values.astype("datetime64[ms]").astype("int64") / 1000
    gap = next(p for p in own_ledger.periods(kind="bad") if p["reason"] == "data_gap")
    before = int(np.searchsorted(ends, gap["start"].timestamp(), side="right"))
    assert before > 0 and ends[before - 1] <= gap["start"].timestamp() < gap["end"].timestamp() <= starts[before]
    # a shifter flags windows 3..5 by hand; history leaves them out on request
    own_ledger.add_period(starts[3] + 0.1, ends[5] - 0.1, "HV trip", automatic=False, who="shifter")
    bad = own_ledger.bad_intervals(starts[0], ends[-1])
    good = replay["history"].load(exclude_bad=True, bad_intervals=[(a.timestamp(), b.timestamp()) for a, b in bad])
    assert good.window_id.values.tolist() == published[:3] + published[6:]


def test_a_detector_run_was_opened(replay):
    runs = replay["ledger"].detector_runs()
    assert len(runs) == 1 and runs[0]["first_orbit"] == min(
        m["window"]["first_orbit"] for m in read_messages(replay["broker"], replay["cfg"].monitor_topic))


def test_history_load_in_one_call_leaves_out_the_ledgers_bad_periods(replay, own_ledger):
    from dtlive.storage import history

    every = history.load(exclude_bad=False, store=replay["history"])
    w8 = every.isel(time=8)
    own_ledger.add_period(w8.time.values.astype("datetime64[ms]").astype("int64") / 1000 + 0.5,
                          w8.window_end.values.astype("datetime64[ms]").astype("int64") / 1000 - 0.5,
                          "test pulse", automatic=False, who="test")
    good = history.load(exclude_bad=True, store=replay["history"], ledger=own_ledger)
    bad = own_ledger.bad_intervals(0, 4e9)
    starts = every.time.values.astype("datetime64[ms]").astype("int64") / 1000
    ends = every.window_end.values.astype("datetime64[ms]").astype("int64") / 1000
    hit = np.zeros(len(starts), bool)
    for a, b in bad:
        hit |= (starts < b.timestamp()) & (ends > a.timestamp())
    assert hit[8] and good.window_id.values.tolist() == every.window_id.values[~hit].tolist()

