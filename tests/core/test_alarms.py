"""The alarm state machine (dtlive.core.alarms) and the notification budget (dtlive.core.ratelimit), pure: latched
until acknowledged, repeats suppressed, escalation, the fold of the events equal to the state machine's board, and
every event valid against the dtlive.alarm/1 schema; properties over random status/acknowledgement sequences."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dtlive.core.alarms import fold, on_ack, on_status, open_alarms, severity
from dtlive.core.messages import iso_utc
from dtlive.core.ratelimit import Budget
from dtlive.core.schemas import validate

T0 = 1_764_928_800.0


def change(status, previous=None, chamber=2, t=0, processor="p", reasons=("why",)):
    return {"processor": processor, "chamber": chamber, "previous": previous, "status": status, "label": None,
            "reasons": list(reasons), "start": iso_utc(T0 + t)}


def run(steps, board=None):
    """Feed (status, chamber) changes and ("ack", alarm index) steps; return board and all events."""
    board, events, last = dict(board or {}), [], {}
    for i, (kind, arg, chamber) in enumerate(steps):
        if kind == "status":
            if arg == last.get(chamber):
                continue  # a verdict that changes nothing makes no status change
            board, new = on_status(board, change(arg, last.get(chamber), chamber=chamber, t=10 * i,
                                                 reasons=() if i % 3 == 0 else (f"why {i}",)))
            last[chamber] = arg
        else:
            ids = sorted(board)
            if not ids:
                continue
            board, new = on_ack(board, ids[arg % len(ids)], "shifter", None, at=T0 + 10 * i)
        events += new
    return board, events


def test_severity_follows_the_status_level():
    assert [severity(s) for s in range(5)] == [None, "warning", "warning", "error", "error"]


def test_a_flapping_chamber_raises_one_alarm_which_stays_latched_until_acknowledged():
    steps = [("status", s, 2) for s in (0, 4, 0, 4, 0, 4, 0)]
    board, events = run(steps)
    assert [e["event"] for e in events] == ["raised", "cleared", "repeated", "cleared", "repeated", "cleared"]
    assert [e["notify"] for e in events] == [True, True, False, False, False, False]  # later clears: repeats
    (alarm,) = board.values()
    assert alarm.state == "cleared" and alarm.latched and alarm.repeats == 2  # ok again, still latched
    assert len({e["alarm_id"] for e in events}) == 1
    board, (ack,) = on_ack(board, alarm.id, "alice", "HV trip", T0 + 100)
    assert ack["state"] == "closed" and board == {}
    board, (again,) = on_status(board, change(3, 0, t=200))  # after it closed: a new alarm
    assert again["event"] == "raised" and again["alarm_id"] != alarm.id


def test_acknowledged_then_ok_closes_and_a_worse_status_latches_again():
    board, (raised,) = on_status({}, change(1, 0))
    assert raised["severity"] == "warning"
    board, (ack,) = on_ack(board, raised["alarm_id"], "bob", None, T0 + 5)
    assert ack["state"] == "acknowledged" and not board[raised["alarm_id"]].latched
    board, (same,) = on_status(board, change(2, 1, t=10))
    assert same["event"] == "repeated" and same["state"] == "acknowledged" and not same["notify"]
    board, (worse,) = on_status(board, change(4, 2, t=20))
    assert (worse["event"], worse["state"], worse["severity"], worse["notify"]) == ("escalated", "active", "error",
                                                                                     True)
    assert on_ack(board, "nope", "bob", None, T0 + 21)[1] == []
    board, _ = on_ack(board, raised["alarm_id"], "bob", None, T0 + 25)
    board, (clear,) = on_status(board, change(0, 4, t=30))
    assert (clear["event"], clear["state"], clear["notify"]) == ("cleared", "closed", True) and board == {}
    assert on_ack(board, raised["alarm_id"], "bob", None, T0 + 40)[1] == []  # closed: nothing to acknowledge


def test_chambers_and_processors_have_their_own_alarms_and_unknown_statuses_change_nothing():
    board, a = on_status({}, change(4, 0, chamber=0))
    board, b = on_status(board, change(4, 0, chamber=1))
    board, c = on_status(board, change(4, 0, chamber=1, processor="q"))
    assert len({e["alarm_id"] for e in a + b + c}) == 3 and len(open_alarms(board)) == 3
    assert on_status(board, change(None, 4, chamber=0))[1] == []
    assert on_status({}, change(0, None))[1] == []  # ok from the start: no alarm


def test_the_same_block_judged_again_raises_the_same_alarm():
    _, first = on_status({}, change(4, 0))
    _, again = on_status({}, change(4, 0))
    assert first == again  # a restarted recorder publishing it again: same ids, counted once by fold and ledger


STEP = st.one_of(st.tuples(st.just("status"), st.integers(0, 4), st.integers(0, 1)),
                 st.tuples(st.just("ack"), st.integers(0, 5), st.just(0)))


@settings(max_examples=200, deadline=None)
@given(st.lists(STEP, max_size=30))
def test_properties_of_any_sequence(steps):
    board, events = run(steps)
    for e in events:
        validate(e)
    assert fold(events) == board  # what dashboards and the ledger fold is the state machine's board
    assert len({e["event_id"] for e in events}) == len(events)
    for chamber in (0, 1):  # one open alarm per chamber at most
        assert sum(a.chamber == chamber for a in board.values()) <= 1
    closed = fold(events, closed=True)
    acked = {e["alarm_id"] for e in events if e["event"] == "acknowledged"}
    for a in closed.values():
        if a.state == "closed":
            assert a.id in acked  # latched: nothing closes without an acknowledgement
    # a new alarm only when none was open: without acknowledgements a chamber has at most one alarm ever
    if not acked:
        for chamber in (0, 1):
            assert sum(e["event"] == "raised" and e["chamber"] == chamber for e in events) <= 1
    notified = [e for e in events if e["notify"]]
    assert all(e["event"] in ("raised", "escalated", "cleared") for e in notified)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5), st.floats(1, 100), st.lists(st.floats(0, 50), max_size=60))
def test_the_budget_never_sends_more_than_its_limit_in_any_period(limit, per_s, gaps):
    budget, now, sent, offered = Budget(limit, per_s), 0.0, [], 0
    for g in gaps:
        now += g
        offered += 1
        if budget.offer(now, "raised"):
            sent.append(now)
    assert budget.sent + budget.held == offered == len(sent) + budget.held_total
    for i, t in enumerate(sent):
        assert sum(t <= u < t + per_s for u in sent[i:]) <= limit
