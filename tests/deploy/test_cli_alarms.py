"""`dtlive alarms` without a broker: the help explains latching and repeats, the list reads the ledger (waiting
alarms first, readable times), and wrong uses of `ack` say why (the Kafka path: tests/storage/test_alarms_kafka.py)."""

from __future__ import annotations

import json

import pytest

from dtlive.core.alarms import on_status
from dtlive.core.messages import iso_utc
from dtlive.deploy.cli import main
from dtlive.storage.ledger import Ledger


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    monkeypatch.setenv("DTLIVE_DB", url)
    monkeypatch.setenv("DTLIVE_BOOTSTRAP", "127.0.0.1:1")  # nothing may be published in these tests
    led = Ledger(url)
    yield led
    led.close()


def test_the_help_explains_latching_repeats_and_acknowledging(capsys):
    with pytest.raises(SystemExit) as done:
        main(["alarms", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    assert "latched" in text and "repeats" in text and "--by NAME" in text and "dtlive alarms ack --all" in text


def test_the_list_shows_waiting_alarms_first_with_times_to_the_second(ledger, capsys):
    board, events = {}, []
    for chamber, status, t in [(0, 2, 0.0), (3, 4, 12.5), (0, 0, 20.0)]:
        board, new = on_status(board, {"processor": "p", "chamber": chamber, "previous": 0 if status else 2,
                                       "status": status, "reasons": [f"reason {chamber}"],
                                       "start": iso_utc(1_764_928_800 + t)})
        events += new
    ledger.record_alarm_events(events)
    assert main(["alarms", "list"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split()[:5] == ["id", "state", "severity", "chamber", "status"]
    assert "ACTIVE" in lines[1] and "2025-12-05 10:00:12" in lines[1] and "reason 3" in lines[1]
    assert "CLEARED" in lines[2] and "reason 0" in lines[2]
    assert "2 of 2 alarms waiting for an acknowledgement" in out.err
    assert main(["alarms", "list", "--json"]) == 0
    assert [r["chamber"] for r in json.loads(capsys.readouterr().out)] == [3, 0]


def test_ack_refuses_unknown_ids_and_wrong_uses(ledger, capsys):
    assert main(["alarms", "ack", "nope", "--by", "alice"]) == 1
    assert "no alarm 'nope'" in capsys.readouterr().err
    assert main(["alarms", "ack", "--all", "x", "--by", "alice"]) == 2
    assert main(["alarms", "ack", "--all", "--by", "alice"]) == 0
    assert "no alarm waits" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["alarms", "ack", "--all"])  # --by is required
    assert main(["alarms"]) == 2
