"""Alarm events in the ledger, on SQLite and on PostgreSQL: each event once, alarms folded from them in the order
recorded (waiting ones listed first), lookup by id prefix, append-only in the database itself, the migration's
table equal to the model, and the outbox that writes them waiting out an outage of the database."""

from __future__ import annotations

import json
import threading
import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dtlive.core.alarms import ack_request, on_status
from dtlive.core.messages import iso_utc
from dtlive.storage.ledger import VERSION_TABLE, Base, Ledger, Outbox, downgrade, upgrade

T0 = 1_764_928_800.0


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return request.getfixturevalue("pg_db")[0]


def change(chamber, previous, status, t):
    return {"processor": "p", "chamber": chamber, "previous": previous, "status": status, "label": None,
            "reasons": [f"status {status}"], "start": iso_utc(T0 + t)}


def test_alarm_events_are_kept_once_and_fold_into_alarms_waiting_ones_first(url):
    with Ledger(url) as led:
        board, events = {}, []
        for c, prev, status, t in [(0, 0, 4, 0), (1, 0, 2, 10), (0, 4, 0, 20), (2, 0, 3, 30), (0, 0, 4, 40)]:
            board, new = on_status(board, change(c, prev, status, t))
            events += new
        assert led.record_alarm_events(events) == 5 and led.record_alarm_events(events[:2]) == 0
        a2 = next(a for a in board.values() if a.chamber == 2)
        ack = ack_request(a2, "alice", "known HV problem", T0 + 50)
        assert led.record_alarm_events([ack, ack]) == 1
        rows = led.alarms()
        assert [(r["chamber"], r["state"]) for r in rows] == [(0, "active"), (1, "active"), (2, "acknowledged")]
        chamber0 = rows[0]
        assert chamber0["repeats"] == 1 and chamber0["reason"] == "status 4"
        assert rows[2]["acked_by"] == "alice" and rows[2]["note"] == "known HV problem"
        assert [e["event"] for e in led.alarm_events(chamber0["id"])] == ["raised", "cleared", "repeated"]
        assert led.find_alarm(chamber0["id"][:5]).chamber == 0
        with pytest.raises(KeyError):
            led.find_alarm("zzzz")
        folded = led.alarm_board()
        assert folded[a2.id].state == "acknowledged"
        assert {k: a for k, a in folded.items() if k != a2.id} == {k: a for k, a in board.items() if k != a2.id}
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), led.engine.begin() as c:
            c.exec_driver_sql("UPDATE alarm_events SET event = 'x'")
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), led.engine.begin() as c:
            c.exec_driver_sql("DELETE FROM alarm_events")


def test_the_migration_gives_the_model_and_goes_down_and_up(url):
    with Ledger(url) as led:
        with led.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            assert compare_metadata(ctx, Base.metadata) == []
        downgrade(led.engine)
        assert "alarm_events" not in sa.inspect(led.engine).get_table_names()
        upgrade(led.engine)
        assert led.alarms() == []


def test_the_outbox_writes_in_order_and_waits_out_an_outage(pg_db):
    url, server = pg_db
    led = Ledger(url)
    _, (raised,) = on_status({}, change(3, 0, 4, 0))
    box = Outbox(led, lambda ledger, events: ledger.record_alarm_events(events))
    server.stop()
    started = time.monotonic()
    box.put([raised])  # returns at once while the database is away
    assert time.monotonic() - started < 1.0 and box.waiting == 1
    threading.Timer(2.0, server.start).start()
    assert box.close(timeout_s=60)
    assert [e["event_id"] for e in led.alarm_events()] == [raised["event_id"]]
    led.close()


def test_what_waits_for_the_database_at_close_is_spooled_and_written_first_by_the_next_outbox(pg_db, tmp_path):
    """A service stopped during an outage (its close waits 0.5 s) keeps the events in its spool file; the next
    outbox on that file writes them, in order, before anything new, once the database answers again."""
    url, server = pg_db
    led = Ledger(url)
    board, events = {}, []
    for c, prev, status, t in [(0, 0, 4, 0), (1, 0, 2, 10), (2, 0, 3, 20)]:
        board, new = on_status(board, change(c, prev, status, t))
        events += new
    spool = tmp_path / "outbox" / "alarm-events.jsonl"

    def write(ledger, batch):
        return ledger.record_alarm_events(batch)

    server.stop()
    server.wait_down()
    box = Outbox(led, write, spool=spool)
    box.put(events[:2])
    box.put(events[2:])
    assert not box.close(timeout_s=0.5)
    assert [len(json.loads(line)) for line in spool.read_text().splitlines()] == [2, 1]
    server.start()
    _, (later,) = on_status(board, change(3, 0, 4, 30))
    again = Outbox(led, write, spool=spool)
    assert again.unspooled
    again.put([later])
    assert again.close(timeout_s=60) and not spool.exists()  # removed once what it held is written
    assert [e["event_id"] for e in led.alarm_events()] == [e["event_id"] for e in [*events, later]]
    led.close()


def test_a_spool_line_that_is_no_json_is_said_and_left_out_and_the_rest_is_written(tmp_path, caplog):
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    _, (raised,) = on_status({}, change(1, 0, 4, 0))
    spool = tmp_path / "outbox" / "alarm-events.jsonl"
    spool.parent.mkdir()
    spool.write_text('[{"truncated": \n' + json.dumps([raised]) + "\n")
    box = Outbox(led, lambda ledger, events: ledger.record_alarm_events(events), spool=spool)
    assert box.close(timeout_s=10) and not spool.exists()
    assert [e["event_id"] for e in led.alarm_events()] == [raised["event_id"]]
    assert any("line 1 is no JSON; left out" in r.getMessage() for r in caplog.records)
    led.close()
