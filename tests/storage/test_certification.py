"""Certification in the ledger, on SQLite and on the local PostgreSQL: judged lumi blocks kept, overrides
append-only, the ``dtlive certify`` command (list, set, export, help), and history loads of certified windows
(a JSON file exported and read back selects what ``certified=True`` does)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa
from sim_windows import sim_messages

from dtlive.config import Config, load_config
from dtlive.core.certified import CERTIFIED
from dtlive.deploy.cli import main
from dtlive.storage import certification, history
from dtlive.storage.history import HistoryStore
from dtlive.storage.judging import LiveJudging
from dtlive.storage.ledger import AppendOnlyError, CertificationOverride, Ledger
from dtlive.storage.references import reference_dir, save

N_REF, BLOCK, SILENT = 10, 5, 2
N = N_REF + 4 * BLOCK  # blocks 1-2 (reference period), 3-4 clean, 5-6 with chamber 2 silent


@pytest.fixture(scope="module")
def sim():
    return sim_messages(N, silent_chamber=SILENT, silent_from=N - 2 * BLOCK)


@pytest.fixture
def judged(db_url, tmp_path, sim):
    """A ledger (SQLite or PostgreSQL) whose detector run 1 holds 6 judged blocks; the history store of the windows."""
    ledger = Ledger(db_url)
    store = HistoryStore(tmp_path / "history")
    store.append(sim)
    save("clean", _stacked(sim[:N_REF]), reference_dir(store.path))
    ledger.open_detector_run(sim[0]["window"]["start"], first_orbit=sim[0]["window"]["first_orbit"])
    live = LiveJudging(Config(judge_windows=BLOCK, reference="clean"), ledger, store.path)
    assert len(live.handle(sim)) == N // BLOCK
    yield ledger, store
    ledger.close()


def _stacked(msgs):
    from dtlive.core.messages import to_dataset

    return to_dataset(msgs, stack=True)


def test_judged_blocks_are_kept_once_with_each_chambers_status(judged, sim):
    ledger, _ = judged
    blocks = ledger.lumi_blocks()
    assert [(b["first_window"], b["last_window"], b["windows"]) for b in blocks] == \
        [(5 * i, 5 * i + 4, 5) for i in range(N // BLOCK)]
    assert [b["statuses"][SILENT] for b in blocks[2:]] == [0, 0, 4, 4]
    assert all(b["statuses"][c] == 0 for b in blocks[2:] for c in (0, 1, 3))
    assert blocks[-1]["detail"]["reference"] == "clean" and blocks[-1]["detail"]["chambers"][str(SILENT)]["reason"]
    assert blocks[0]["start"].isoformat().startswith("2025-12-05T10:00:00")
    assert ledger.block_processors() == ["proc"]
    # the same verdicts again (a restarted recorder judging the same windows) add nothing
    again = LiveJudging(Config(judge_windows=BLOCK, reference="clean"), ledger, None)
    again.handle(sim)
    assert len(ledger.lumi_blocks()) == N // BLOCK
    assert [b["first_window"] for b in ledger.lumi_blocks(start=blocks[3]["start"], end=blocks[4]["end"])] == [15, 20]


def test_overrides_are_append_only_down_to_the_database(judged):
    ledger, _ = judged
    ledger.add_override(good=False, reason="HV trip", who="alice", run=1)
    with pytest.raises(AppendOnlyError), ledger.session(write=True) as s:
        s.scalars(sa.select(CertificationOverride)).first().good = True
    with pytest.raises(AppendOnlyError), ledger.session() as s:
        s.delete(s.scalars(sa.select(CertificationOverride)).first())
    with pytest.raises(AppendOnlyError), ledger.session() as s:
        s.execute(sa.delete(CertificationOverride))
    for sql in ("UPDATE certification_overrides SET good = NOT good", "DELETE FROM certification_overrides"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), ledger.engine.begin() as c:
            c.exec_driver_sql(sql)
    (o,) = ledger.overrides()
    assert (o["good"], o["reason"], o["who"], o["run"], o["chamber"]) == (False, "HV trip", "alice", 1, None)
    with pytest.raises(ValueError, match="run or a time range"):
        ledger.add_override(good=True, reason="x", who="y", chamber=1)
    with pytest.raises(ValueError, match="reason"):
        ledger.add_override(good=True, reason="", who="y", run=1)


def test_automatic_verdicts_follow_the_threshold_and_overrides_survive_it(judged):
    ledger, _ = judged
    assert certification.export(ledger, 2)["runs"][f"chamber_{SILENT}"] == {"1": [[1, 4]]}
    assert certification.export(ledger, 4)["runs"][f"chamber_{SILENT}"] == {"1": [[1, 6]]}
    ledger.add_override(good=False, reason="noise on the HV line", who="expert", run=1, chamber=SILENT)
    for m in (2, 4):  # recomputed with another rule: the person's verdict stays
        assert certification.export(ledger, m)["runs"][f"chamber_{SILENT}"] == {}
    assert certification.export(ledger, 2)["runs"]["chamber_0"] == {"1": [[1, 6]]}


def test_the_certify_command_lists_sets_and_exports(judged, db_url, tmp_path, monkeypatch, capsys, sim):
    ledger, _ = judged
    monkeypatch.setenv("DTLIVE_DB", db_url)
    assert main(["certify", "list", "--chamber", str(SILENT)]) == 0
    out = capsys.readouterr().out
    assert "status <= 2" in out and f"chamber_{SILENT}" in out and "chamber_0" not in out
    assert "BAD (4/6 good)" in out and out.count("BAD (4)") == 2 and out.count("good (0)") == 4

    good = tmp_path / "good.json"
    assert main(["certify", "export", "--out", str(good)]) == 0
    before = json.loads(good.read_text())
    assert before["schema"] == "dtlive.certification/1" and before["processor"] == "proc"
    assert before["runs"][f"chamber_{SILENT}"] == {"1": [[1, 4]]} and before["runs"]["chamber_1"] == {"1": [[1, 6]]}
    assert before["runs"]["all"] == {"1": [[1, 4]]}
    assert before["good_runs"] == {"chamber_0": [1], "chamber_1": [1], "chamber_2": [], "chamber_3": [1], "all": []}
    assert before["times"][f"chamber_{SILENT}"] == [[sim[0]["window"]["start"], sim[N - 2 * BLOCK]["window"]["start"]]]

    # a person: block 5 of chamber 2 is fine after all; then the whole run bad for chamber 0 ...
    assert main(["certify", "set", "--start", sim[N - 2 * BLOCK]["window"]["start"], "--end",
                 sim[N - BLOCK]["window"]["start"], "--chamber", str(SILENT), "--good", "--reason",
                 "pulser run, chamber was on", "--by", "alice"]) == 0
    assert "certified good by alice" in capsys.readouterr().err
    assert main(["certify", "set", "--run", "1", "--chamber", "0", "--bad", "--reason", "gas mix wrong",
                 "--by", "bob"]) == 0
    # ... and a later correction for part of it: it wins where it covers, both stay on record
    assert main(["certify", "set", "--start", sim[0]["window"]["start"], "--end", sim[BLOCK]["window"]["start"],
                 "--chamber", "0", "--good", "--reason", "gas fixed before the run", "--by", "bob"]) == 0
    capsys.readouterr()
    assert main(["certify", "export"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["runs"][f"chamber_{SILENT}"] == {"1": [[1, 5]]}
    assert after["runs"]["chamber_0"] == {"1": [[1, 1]]} and after["runs"]["all"] == {"1": [[1, 1]]}
    assert after["rule"]["overridden"] == 7  # decided blocks x chambers: 1 + 6 (the later one replaced one of them)
    assert [(o["who"], o["good"]) for o in ledger.overrides()] == [("alice", True), ("bob", False), ("bob", True)]

    assert main(["certify", "list", "--run", "1", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    by = {(b["block"], b["chamber"]): b for b in listed["blocks"]}
    assert by[(5, SILENT)]["good"] and not by[(5, SILENT)]["automatic"] and by[(5, SILENT)]["override"] is not None
    assert [o["reason"] for o in listed["overrides"]][-1] == "gas fixed before the run"
    assert main(["certify", "list"]) == 0
    table = capsys.readouterr().out
    assert "good* (4)" in table and "BAD* (0)" in table and "gas mix wrong" in table

    assert main(["certify", "set", "--run", "1", "--chamber", "7", "--bad", "--reason", "x", "--by", "y"]) == 1
    assert "--chamber" in capsys.readouterr().err
    assert main(["certify"]) == 2


def test_the_certify_help_explains_the_rule_and_the_format(capsys):
    with pytest.raises(SystemExit):
        main(["certify", "--help"])
    text = capsys.readouterr().out
    for words in ("certify_max_status", "golden JSON", "[[first_block, last_block]", "history.load", "--by NAME"):
        assert words in text
    with pytest.raises(SystemExit):
        main(["certify", "set", "--run", "1", "--chamber", "1", "--good"])  # reason and who are required
    assert "--reason" in capsys.readouterr().err


def test_the_threshold_is_a_setting():
    assert load_config({}, env={"DTLIVE_CERTIFY_MAX_STATUS": "1"}).certify_max_status == 1
    with pytest.raises(ValueError, match="certify_max_status"):
        load_config({"certify_max_status": 5}, env={})


def test_a_history_load_of_certified_windows_equals_the_exported_file_read_back(judged, tmp_path, sim):
    ledger, store = judged
    path = certification.write(certification.export(ledger), tmp_path / "good.json")
    kw = dict(store=store, ledger=ledger, exclude_bad=False)
    every = history.load(**kw)
    by_ledger = history.load(certified=True, **kw)
    by_file = history.load(certified=str(path), **kw)
    assert by_file.identical(by_ledger)
    assert by_ledger.time.size == every.time.size == N  # one good chamber is enough to keep a window
    silent = by_ledger.hits_per_chamber.sel(chamber=SILENT).values
    assert np.isnan(silent[N - 2 * BLOCK:]).all() and not np.isnan(silent[:N - 2 * BLOCK]).any()
    assert by_ledger[CERTIFIED].sel(chamber=SILENT).values.tolist() == [True] * (N - 2 * BLOCK) + [False] * 2 * BLOCK
    assert (by_ledger.hits_per_chamber.sel(chamber=0).values == every.hits_per_chamber.sel(chamber=0).values).all()
    # a person marks every chamber bad for the first block: its windows are gone
    ledger.add_override(good=False, reason="beam test", who="carol", start=sim[0]["window"]["start"],
                        end=sim[BLOCK]["window"]["start"])
    fewer = history.load(certified=True, **kw)
    assert fewer.window_id.values.tolist() == list(range(BLOCK, N))
    assert not fewer.identical(history.load(certified=str(path), **kw))  # the old file: the old selection
    certification.write(certification.export(ledger), path)
    assert history.load(certified=str(path), **kw).identical(fewer)
