"""Live judging without a broker: lumi blocks of simulated windows judged against a saved reference, the
chamber status changes in the ledger, a missing reference, references saved from the history store and the
``dtlive reference`` command."""

from __future__ import annotations

import json
import logging

import pytest
from sim_windows import sim_messages

from dtlive.config import Config, load_config
from dtlive.core.messages import QUALITY_TESTS_SCHEMA, to_dataset
from dtlive.storage.history import HistoryStore
from dtlive.storage.judging import STATUS_KIND, LiveJudging
from dtlive.storage.ledger import Ledger
from dtlive.storage.references import ReferenceFile, list_references, reference_dir, save, save_from_history

N_REF, N_CLEAN, N_SILENT, BLOCK, SILENT = 10, 5, 5, 5, 2


@pytest.fixture(scope="module")
def sim():
    return sim_messages(N_REF + N_CLEAN + N_SILENT, silent_chamber=SILENT, silent_from=N_REF + N_CLEAN)


@pytest.fixture
def history(tmp_path, sim):
    store = HistoryStore(tmp_path / "history")
    save("clean", to_dataset(sim[:N_REF], stack=True), reference_dir(store.path))
    return store


def statuses(verdict: dict) -> dict[int, int]:
    return {int(k.rsplit("_", 1)[1]): c["status"] for k, c in verdict["chambers"].items()}


def test_a_silent_chamber_turns_bad_and_its_status_change_is_in_the_ledger(sim, history):
    ledger = Ledger("sqlite://")
    live = LiveJudging(Config(judge_windows=BLOCK, reference="clean"), ledger, history.path)
    verdicts = live.handle(sim[N_REF:N_REF + 3]) + live.handle(sim[N_REF + 3:])
    assert [v["windows"]["ids"] for v in verdicts] == [[10, 14], [15, 19]]
    clean, silent = verdicts
    assert clean["schema"] == QUALITY_TESTS_SCHEMA and clean["reference"]["label"] == "clean"
    assert clean["processor"] == "proc" and statuses(clean) == {0: 0, 1: 0, 2: 0, 3: 0}
    assert statuses(silent)[SILENT] == 4 and silent["status"] == 4
    assert {c: s for c, s in statuses(silent).items() if c != SILENT} == {0: 0, 1: 0, 3: 0}
    assert any("dead" in r for r in silent["chambers"][f"chamber_{SILENT}"]["reasons"])
    periods = ledger.periods(kind=STATUS_KIND)
    mine = [p for p in periods if p["detail"]["chamber"] == SILENT]
    assert [p["detail"]["status"] for p in mine] == [0, 4]
    assert mine[0]["end"] == mine[1]["start"] and mine[1]["end"] is None  # the change ends the previous status
    assert mine[1]["start"].isoformat().startswith("2025-12-05T10:00:30")  # first window of the silent block
    assert [p["detail"]["status"] for p in periods if p["detail"]["chamber"] != SILENT] == [0, 0, 0]
    assert ledger.bad_intervals(0, 4e9) == []  # status periods never exclude windows by themselves
    # a recorder started again goes on from the open periods: no new period while nothing changes
    again = LiveJudging(Config(judge_windows=BLOCK, reference="clean"), ledger, history.path)
    again.handle(sim[N_REF + N_CLEAN:])
    assert len(ledger.periods(kind=STATUS_KIND)) == len(periods) and again.status_changes == 0


def test_without_the_reference_file_the_tests_needing_none_still_judge_and_the_log_says_so_once(sim, history, caplog):
    caplog.set_level(logging.WARNING, logger="dtlive.storage.references")
    live = LiveJudging(Config(judge_windows=BLOCK, reference="absent"), Ledger("sqlite://"), history.path)
    verdicts = live.handle(sim[N_REF:])
    said = [r.getMessage() for r in caplog.records if "absent" in r.getMessage()]
    assert len(said) == 1 and "only tests that need no reference" in said[0]
    assert all(v["reference"]["label"] is None for v in verdicts)
    silent = verdicts[-1]["chambers"][f"chamber_{SILENT}"]
    assert silent["status"] >= 2 and any("chamber_rate_hz" in r for r in silent["reasons"])  # 0 Hz, no reference
    # the reference saved while the recorder runs is used from the next block on
    save("absent", to_dataset(sim[:N_REF], stack=True), reference_dir(history.path))
    later = live.handle([{**m, "window": {**m["window"], "id": m["window"]["id"] + 100}}
                         for m in sim[N_REF:N_REF + BLOCK]])
    assert later[0]["reference"]["label"] == "absent"


def test_judging_is_off_with_zero_windows_per_block():
    assert load_config({"judge_windows": 0}, env={}).judge_windows == 0
    with pytest.raises(ValueError, match="judge_windows"):
        load_config({"judge_windows": -1}, env={})


def test_a_reference_from_the_history_store_keeps_its_provenance(sim, tmp_path):
    store = HistoryStore(tmp_path / "h")
    store.append(sim[:N_REF])
    path, n = save_from_history("run1", "2025-12-05T10:00:00Z", "2025-12-05T10:00:10Z", history=store,
                                keep_bad=True, detector={"hv_V": "3600"})
    assert n == 5 and path == store.path / "references" / "run1.nc"
    (row,) = list_references(reference_dir(store.path))
    assert (row["name"], row["windows"], row["label"]) == ("run1", 5, "run1")
    assert row["first_start"].startswith("2025-12-05T10:00:00") and row["last_end"].startswith("2025-12-05T10:00:10")
    ref = ReferenceFile("run1", reference_dir(store.path)).get()
    assert json.loads(ref.attrs["detector"])["hv_V"] == "3600"
    assert json.loads(ref.attrs["window_ids"]) == [0, 1, 2, 3, 4]
    with pytest.raises(FileExistsError):
        save_from_history("run1", None, None, history=store, keep_bad=True)
    store.append(sim_messages(2, processor="other"))
    with pytest.raises(ValueError, match="several processors"):
        save_from_history("both", None, None, history=store, keep_bad=True)
    _, n = save_from_history("proc", None, None, history=store, keep_bad=True, processor="other")
    assert n == 2


def test_the_reference_command_saves_and_lists(sim, tmp_path, monkeypatch, capsys):
    from dtlive.deploy.cli import main

    monkeypatch.setenv("DTLIVE_HISTORY", str(tmp_path / "history"))
    monkeypatch.setenv("DTLIVE_DB", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    HistoryStore().append(sim[:N_REF])
    assert main(["reference", "list"]) == 0
    assert "not saved yet" in capsys.readouterr().err
    assert main(["reference", "save", "default", "--start", "2025-12-05T10:00:00Z", "--end", "1764928820",
                 "--detector", "gas=ArCO2"]) == 0
    assert "10 windows" in capsys.readouterr().err
    assert main(["reference", "save", "default", "--start", "0", "--end", "2e9"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["reference", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "default" and row["default"] == "*" and row["windows"] == N_REF
