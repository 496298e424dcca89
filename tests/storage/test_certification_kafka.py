"""Certification from the recorder on the real broker, with the ledger on SQLite and on PostgreSQL: a simulated
run in which a chamber goes silent gives bad lumi blocks for that chamber and good ones for the others; a
person's override changes the exported good ranges; the history load of certified windows follows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from confluent_kafka import Producer
from sim_windows import sim_messages

from dtlive.config import load_config
from dtlive.deploy.cli import main
from dtlive.kafka.clients import ensure_topics
from dtlive.storage import certification, history
from dtlive.storage.history import HistoryStore
from dtlive.storage.ledger import Ledger
from dtlive.storage.recorder import Recorder
from dtlive.storage.references import save_from_history

pytestmark = [pytest.mark.kafka]

N_REF, N_CLEAN, N_SILENT, BLOCK, SILENT = 10, 5, 10, 5, 3


def produce(broker: str, topic: str, msgs: list[dict]) -> None:
    p = Producer({"bootstrap.servers": broker})
    for m in msgs:
        p.produce(topic, json.dumps(m).encode())
    assert p.flush(10) == 0


def test_the_recorder_certifies_a_run_with_a_fault_and_a_person_overrides_it(broker, topics, db_url, tmp_path,
                                                                              monkeypatch, capsys):
    cfg = load_config({"bootstrap": broker, **topics, "quality_topic": f"dq-{topics['group_id']}",
                       "judge_windows": BLOCK, "reference": "clean"}, env={})
    ensure_topics(cfg, broker, [cfg.monitor_topic])
    ledger = Ledger(db_url)
    store = HistoryStore(tmp_path / "history")
    sim = sim_messages(N_REF + N_CLEAN + N_SILENT, silent_chamber=SILENT, silent_from=N_REF + N_CLEAN,
                       processor=cfg.group_id)

    produce(broker, cfg.monitor_topic, sim[:N_REF])  # the reference period, then its reference is saved
    Recorder(cfg, broker, ledger=ledger, history=store).run(until_end=True, max_seconds=60).close()
    save_from_history("clean", sim[0]["window"]["start"], sim[N_REF]["window"]["start"], history=store,
                      keep_bad=True)
    produce(broker, cfg.monitor_topic, sim[N_REF:])  # clean, then chamber 3 silent
    Recorder(cfg, broker, ledger=ledger, history=store).run(until_end=True, max_seconds=60).close()

    (run,) = ledger.detector_runs()
    verdicts = certification.verdicts(ledger)
    judged = [v for v in verdicts if v.block.first_window >= N_REF]  # the blocks judged against the reference
    assert {v.number for v in judged} == {3, 4, 5} and all(v.run == run["id"] for v in verdicts)
    for v in judged:
        faulty = v.chamber == SILENT and v.block.first_window >= N_REF + N_CLEAN
        assert (v.good, v.status) == ((False, 4) if faulty else (True, 0)), (v.number, v.chamber)

    monkeypatch.setenv("DTLIVE_DB", db_url)
    good = tmp_path / "good.json"
    assert main(["certify", "export", "--out", str(good)]) == 0
    before = json.loads(good.read_text())
    r = str(run["id"])
    assert before["runs"][f"chamber_{SILENT}"] == {r: [[1, 3]]}
    assert all(before["runs"][f"chamber_{c}"] == {r: [[1, 5]]} for c in (0, 1, 2))
    start = [m["window"]["start"] for m in sim]
    assert before["times"][f"chamber_{SILENT}"] == [[start[0], start[N_REF + N_CLEAN]]]

    # the certified history: chamber 3 NaN where it was silent, every window kept
    kw = dict(store=store, ledger=ledger, exclude_bad=False)
    by_file = history.load(certified=str(good), **kw)
    assert by_file.identical(history.load(certified=True, **kw)) and by_file.time.size == len(sim)
    assert np.isnan(by_file.hits_per_chamber.sel(chamber=SILENT).values[N_REF + N_CLEAN:]).all()

    # the expert: the chamber was off on purpose for block 4 only -> certified good there
    assert main(["certify", "set", "--start", sim[N_REF + N_CLEAN]["window"]["start"], "--end",
                 sim[N_REF + N_CLEAN + BLOCK]["window"]["start"], "--chamber", str(SILENT), "--good",
                 "--reason", "HV off on purpose for a pulser test", "--by", "expert"]) == 0
    assert main(["certify", "export", "--out", str(good)]) == 0
    after = json.loads(good.read_text())
    assert after["runs"][f"chamber_{SILENT}"] == {r: [[1, 4]]} and after["runs"]["all"] == {r: [[1, 4]]}
    assert after["rule"]["overridden"] == 1
    capsys.readouterr()
    assert main(["certify", "list", "--chamber", str(SILENT)]) == 0
    table = capsys.readouterr().out
    assert "good* (4)" in table and "BAD (4)" in table and "HV off on purpose" in table
    ledger.close()
