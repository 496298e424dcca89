"""The run bookkeeping ledger (dtlive.storage.ledger), every test on SQLite and on the local PostgreSQL.

PostgreSQL (127.0.0.1:5432, trust auth, database ``test``, or ``DTLIVE_TEST_PG``): each test gets
its own schema, dropped afterwards. Unreachable PostgreSQL skips those tests, except on CI (``CI``
set), where it fails them.
"""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from dtlive.storage.ledger import (
    VERSION_TABLE,
    AppendOnlyError,
    Base,
    Ledger,
    Q,
    TaskState,
    current_revision,
    default_url,
    downgrade,
    head_revision,
    merge_offset_ranges,
    normalize_url,
    to_utc,
    upgrade,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LEDGER_TABLES = {"processing_runs", "windows", "window_inputs", "dq_periods", "detector_runs", "annotations", "tags",
                 "task_states", "lumi_blocks", "certification_overrides"}


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def ledger(db_url):
    led = Ledger(db_url)
    yield led
    led.close()


def window_msg(wid, *, run="run-a", processor="proc-a", inputs=((0, 0, 9),), topic="dt.hits", version="0.1.0",
               config_hash="h1", total=10, host="daq-1"):
    """A dtlive.monitor/1 message of window ``wid`` (2 s windows from T0); inputs: (partition, first, last)."""
    start = T0 + timedelta(seconds=2 * wid)
    return {
        "schema": "dtlive.monitor/1",
        "window": {"id": wid, "first_orbit": wid * 100, "last_orbit": wid * 100 + 99,
                   "start": start.isoformat().replace("+00:00", "Z"),
                   "end": (start + timedelta(seconds=2)).isoformat().replace("+00:00", "Z")},
        "provenance": {"inputs": [{"topic": topic, "partition": p, "first_offset": a, "last_offset": b}
                                  for p, a, b in inputs],
                       "dtlive_version": version, "config_hash": config_hash, "run_id": run, "processor": processor,
                       "host": host, "orbit_epoch": T0.timestamp(), "input_position": [], "restart_offsets": []},
        "total_hits": total,
        "hits_per_chamber": [total, 0, 0, 0],
        "counts": {"rows": total + 3, "rejected": {"bad_csv": 1, "bad_head": 2}, "ancillary": 2,
                   "special_channel_hits": 0, "late_hits": 1},
        "histograms": {},
    }  # fmt: skip


def ids(runs):
    return {r["id"] for r in runs}


# ------------------------------------------------------------------------------ schema and migrations


def test_migrations_give_the_models_tables(db_url):
    led = Ledger(db_url)
    try:
        assert current_revision(led.engine) == head_revision()
        with led.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            assert compare_metadata(ctx, Base.metadata) == []
            assert set(sa.inspect(conn).get_table_names()) >= LEDGER_TABLES
    finally:
        led.close()


def test_open_is_idempotent_and_downgrade_upgrade_round_trips(db_url):
    with Ledger(db_url) as led:
        run = led.start_run(config={"window_s": 2.0}, config_hash="h1")
    with Ledger(db_url) as led:  # second open: nothing to migrate, data kept
        assert [r["run_id"] for r in led.runs()] == [run]
        downgrade(led.engine)
        assert not LEDGER_TABLES & set(sa.inspect(led.engine).get_table_names())
        upgrade(led.engine)
        assert led.runs() == [] and current_revision(led.engine) == head_revision()
        with led.engine.begin() as c:  # a database migrated by a newer dtlive
            c.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff'")
    with pytest.raises(RuntimeError, match="use a newer dtlive"):
        Ledger(db_url)


def test_plain_postgresql_urls_use_psycopg3():
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def test_default_url_is_dtlive_db_or_a_file_in_the_user_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("DTLIVE_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_url() == f"sqlite:///{tmp_path / 'data' / 'dtlive' / 'ledger.sqlite'}"
    with Ledger() as led:
        led.append_state("t", "ok")
    assert (tmp_path / "data" / "dtlive" / "ledger.sqlite").is_file()
    monkeypatch.setenv("DTLIVE_DB", f"sqlite:///{tmp_path / 'other.sqlite'}")
    with Ledger() as led:
        assert led.current_state("t") is None
    assert (tmp_path / "other.sqlite").is_file()


def _open_and_write(url, barrier, n):
    barrier.wait(10)
    led = Ledger(url)
    for i in range(5):
        led.record_window(window_msg(i, inputs=((0, 10 * i, 10 * i + 9),)), "dt.monitor", 0, i)  # same in all
    led.append_state(f"task-{n}", "started", task_kind="test")
    led.tag("run", "run-a", f"worker-{n}", "shared")
    led.close()


def test_concurrent_open_of_a_new_database(db_url):
    """Several processes open (and so migrate) the same new database at once and record the same windows."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_open_and_write, args=(db_url, barrier, n)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    with Ledger(db_url) as led:
        assert [w["window_id"] for w in led.windows()] == [0, 1, 2, 3, 4]
        assert sorted(t["task_id"] for t in led.tasks(kind="test")) == [f"task-{n}" for n in range(4)]
        assert led.tags("run", "run-a") == ["shared", "worker-0", "worker-1", "worker-2", "worker-3"]
        if db_url.startswith("sqlite"):
            with led.engine.connect() as c:
                assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


# ------------------------------------------------------------------------------------ processing runs


def test_runs_start_stop_and_listing(ledger):
    from dtlive import __version__
    from dtlive.config import Config

    a = ledger.start_run(config={"window_s": 2.0}, config_hash="h1", inputs=[{"topic": "dt.hits"}], at=T0)
    cfg = Config(group_id="reprocess-1", kafka={"sasl.password": "hunter2", "linger.ms": "5"})
    b = ledger.start_run("reprocessing", cfg, run_id="rep-1", at=T0 + timedelta(hours=1))
    ra, rb = ledger.run(a), ledger.run(b)
    assert (ra["status"], ra["dtlive_version"], ra["inputs"]) == ("running", __version__, [{"topic": "dt.hits"}])
    assert ra["host"] and ra["started_at"] == T0 and ra["stopped_at"] is None
    assert (rb["run_id"], rb["config_hash"], rb["processor"]) == ("rep-1", cfg.config_hash, "reprocess-1")
    assert rb["config"]["kafka"] == {"sasl.password": "***", "linger.ms": "5"}  # secrets never stored
    assert rb["git_commit"] == ra["git_commit"] and (ra["git_commit"] is None or len(ra["git_commit"]) == 40)
    with pytest.raises(ValueError, match="already exists"):
        ledger.start_run(run_id="rep-1")

    ledger.stop_run(a, at=T0 + timedelta(minutes=30))
    ledger.stop_run(a)  # the same stop again: no-op
    with pytest.raises(ValueError):
        ledger.stop_run(a, "failed")
    with pytest.raises(KeyError):
        ledger.stop_run("nope")
    assert [r["run_id"] for r in ledger.runs()] == [a, b]
    assert [r["run_id"] for r in ledger.runs(status="running")] == [b]
    assert [r["run_id"] for r in ledger.runs(kind="processing")] == [a]
    assert [r["run_id"] for r in ledger.runs(start=T0 + timedelta(minutes=45))] == [b]
    assert [r["run_id"] for r in ledger.runs(end=T0 + timedelta(minutes=10))] == [a]
    assert ledger.run(a)["stopped_at"] == T0 + timedelta(minutes=30)


# ------------------------------------------------------------------------------------------ windows


def test_a_new_series_after_a_broker_restart_never_collides_with_the_old_one(ledger):
    """A processor whose broker lost its topics starts a new run that publishes the same window ids again (partial
    windows); both are kept, re-reading either adds nothing, and result offsets are per broker (cluster id)."""
    old = [(window_msg(i, run="run-1", total=10), "dt.monitor", 0, i) for i in range(3)]
    new = [(window_msg(i, run="run-2", total=4), "dt.monitor", 0, n) for n, i in enumerate((2, 3))]  # from 0 again
    assert ledger.record_windows(old, cluster="c1") == 3
    assert ledger.record_windows(new, cluster="c2") == 2
    assert ledger.record_windows(new, cluster="c2") == 0 and ledger.record_windows(old, cluster="c1") == 0
    again = [(w["window_id"], w["run_id"], w["total_hits"]) for w in ledger.windows() if w["window_id"] == 2]
    assert sorted(again) == [(2, "run-1", 10), (2, "run-2", 4)]
    assert ledger.result_positions("dt.monitor", cluster="c1") == {0: 3}
    assert ledger.result_positions("dt.monitor", cluster="c2") == {0: 2}
    assert ledger.result_positions("dt.monitor", cluster="c3") == {}


def test_record_window_is_idempotent_and_keeps_everything(ledger):
    assert ledger.record_window(window_msg(0), "dt.monitor", 0, 100) is True
    assert ledger.record_window(json.dumps(window_msg(0)).encode(), "dt.monitor", 0, 100) is False
    batch = [(window_msg(i, inputs=((0, 10 * i, 10 * i + 9), (1, 5 * i, 5 * i + 4))), "dt.monitor", 0, 100 + i)
             for i in (0, 1, 2, 2, 1)]
    assert ledger.record_windows(batch) == 2  # windows 1 and 2; 0 known, duplicates within the batch too
    assert ledger.record_windows(batch) == 0  # re-reading the results topic adds nothing
    ws = ledger.windows()
    assert [w["window_id"] for w in ws] == [0, 1, 2]
    w1 = ws[1]
    assert (w1["processor"], w1["run_id"], w1["first_orbit"], w1["last_orbit"]) == ("proc-a", "run-a", 100, 199)
    assert (w1["start"], w1["end"]) == (T0 + timedelta(seconds=2), T0 + timedelta(seconds=4))
    assert (w1["total_hits"], w1["rows"], w1["rejected"], w1["late_hits"], w1["ancillary"]) == (10, 13, 3, 1, 2)
    assert w1["rejected_by_reason"] == {"bad_csv": 1, "bad_head": 2} and w1["hits_per_chamber"] == [10, 0, 0, 0]
    assert (w1["result_topic"], w1["result_partition"], w1["result_offset"]) == ("dt.monitor", 0, 101)
    assert (w1["config_hash"], w1["dtlive_version"], w1["host"]) == ("h1", "0.1.0", "daq-1")
    assert w1["inputs"] == [{"topic": "dt.hits", "partition": 0, "first_offset": 10, "last_offset": 19},
                            {"topic": "dt.hits", "partition": 1, "first_offset": 5, "last_offset": 9}]
    # the same window id from another processor is another window
    assert ledger.record_window(window_msg(1, processor="proc-b", run="run-b"), "dt.monitor", 1, 7) is True
    assert len(ledger.windows()) == 4 and len(ledger.windows(processor="proc-b")) == 1
    # a run only seen in results is known (as "observed") and completed when it registers itself
    assert ledger.run("run-b")["status"] == "observed" and ledger.run("run-b")["host"] == "daq-1"
    ledger.start_run(config={"window_s": 2.0}, config_hash="h1", run_id="run-b")
    assert ledger.run("run-b")["status"] == "running" and ledger.run("run-b")["config"] == {"window_s": 2.0}


def test_record_window_from_the_real_encoder(ledger):
    from dtlive.core.detector import ORBIT_S
    from dtlive.core.messages import encode_message, iso_utc
    from dtlive.core.rows import Rows
    from dtlive.core.windows import Window
    from dtlive.streaming.nodes import window_dataset

    hits = Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 1], channel=[3, 4, 70], orbit=[7, 8, 9], bx=[0, 0, 0],
                             tdc=[0, 0, 0])
    window = Window(3, 300, 399, hits, inputs={0: (40, 52), 2: (7, 7)},
                    meta={"counts": {"rows": 4, "rejected.bad_csv": 1}, "orbit_epoch": T0.timestamp()})
    prov = {"topic": "dt.hits", "config_hash": "c0ffee", "run_id": "r1", "processor": "dtlive-processor",
            "host": "h"}
    assert ledger.record_window(encode_message(window_dataset(window, provenance=prov)), "dt.monitor", 0, 9)
    (w,) = ledger.windows(run_id="r1")
    assert (w["window_id"], w["total_hits"], w["rows"], w["rejected"], w["config_hash"]) == (3, 3, 4, 1, "c0ffee")
    assert w["start"] == to_utc(iso_utc(T0.timestamp() + 300 * ORBIT_S))  # orbit_epoch + first_orbit * ORBIT_S
    assert [(i["partition"], i["first_offset"], i["last_offset"]) for i in w["inputs"]] == [(0, 40, 52), (2, 7, 7)]


def test_windows_by_time_range_and_run(ledger):
    ledger.record_windows([(window_msg(i, run="r1" if i < 5 else "r2"), "dt.monitor", 0, i) for i in range(10)])
    # windows overlapping [T0+3s, T0+9s): windows 1 (2-4 s) .. 4 (8-10 s)
    assert [w["window_id"] for w in ledger.windows(T0 + timedelta(seconds=3), T0.timestamp() + 9)] == [1, 2, 3, 4]
    assert [w["window_id"] for w in ledger.windows(start="2024-05-01T12:00:15Z")] == [7, 8, 9]
    assert [w["window_id"] for w in ledger.windows(run_id="r2", end=T0 + timedelta(seconds=14))] == [5, 6]


def test_provenance_merges_offset_ranges_per_partition(ledger):
    ledger.start_run(config={"window_s": 2.0, "lateness_s": 0.5}, config_hash="h1", run_id="r1", git_commit="a" * 40)
    ledger.start_run(config={"window_s": 2.0, "lateness_s": 1.0}, config_hash="h2", run_id="r2", git_commit="b" * 40,
                     dtlive_version="0.2.0")
    msgs = [
        window_msg(0, run="r1", inputs=((0, 0, 99), (1, 0, 49))),
        window_msg(1, run="r1", inputs=((0, 100, 199), (1, 45, 80))),  # p0 adjacent, p1 overlapping
        window_msg(2, run="r2", config_hash="h2", version="0.2.0", inputs=((0, 250, 260),)),  # p0 gap
        window_msg(3, run="r2", config_hash="h2", version="0.2.0", inputs=((0, 199, 249), (1, 81, 81))),  # fills gap
        window_msg(4, run="r2", config_hash="h2", version="0.2.0", inputs=((0, 300, 310),), topic="dt.hits.other"),
    ]
    ledger.record_windows([(m, "dt.monitor", 0, 1000 + i) for i, m in enumerate(msgs)])

    one = ledger.provenance(1)
    assert one["windows"] == 1 and one["processors"] == {"proc-a": {"windows": 1, "first_window": 1,
                                                                    "last_window": 1}}
    assert one["inputs"] == [{"topic": "dt.hits", "partition": 0, "ranges": [(100, 199)], "messages": 100},
                             {"topic": "dt.hits", "partition": 1, "ranges": [(45, 80)], "messages": 36}]
    assert one["code"] == {"dtlive_versions": ["0.1.0"], "git_commits": ["a" * 40]}
    assert one["configuration"] == {"config_hashes": ["h1"], "configs": {"r1": {"window_s": 2.0, "lateness_s": 0.5}}}
    assert one["results"] == [{"topic": "dt.monitor", "partition": 0, "ranges": [(1001, 1001)], "messages": 1}]

    first3 = ledger.provenance(start=T0, end=T0 + timedelta(seconds=6))  # windows 0, 1, 2
    assert first3["inputs"] == [{"topic": "dt.hits", "partition": 0, "ranges": [(0, 199), (250, 260)], "messages": 211},
                                {"topic": "dt.hits", "partition": 1, "ranges": [(0, 80)], "messages": 81}]
    everything = ledger.provenance(start=T0)
    assert everything["inputs"] == [
        {"topic": "dt.hits", "partition": 0, "ranges": [(0, 260)], "messages": 261},
        {"topic": "dt.hits", "partition": 1, "ranges": [(0, 81)], "messages": 82},
        {"topic": "dt.hits.other", "partition": 0, "ranges": [(300, 310)], "messages": 11},
    ]
    assert everything["results"][0]["ranges"] == [(1000, 1004)]
    assert everything["code"] == {"dtlive_versions": ["0.1.0", "0.2.0"], "git_commits": ["a" * 40, "b" * 40]}
    assert everything["configuration"]["config_hashes"] == ["h1", "h2"]
    assert everything["configuration"]["configs"]["r2"] == {"window_s": 2.0, "lateness_s": 1.0}
    assert [r["run_id"] for r in everything["runs"]] == ["r1", "r2"]
    assert (everything["start"], everything["end"]) == (T0, T0 + timedelta(seconds=10))

    ledger.record_window(window_msg(1, processor="proc-b", run="r3"), "dt.monitor", 1, 5)
    assert ledger.provenance(1)["windows"] == 2
    assert ledger.provenance(1, processor="proc-b")["configuration"]["configs"] == {"r3": None}  # observed only
    with pytest.raises(KeyError):
        ledger.provenance(99)
    empty = ledger.provenance(start=T0 + timedelta(days=1))
    assert (empty["windows"], empty["inputs"], empty["runs"], empty["start"]) == (0, [], [], None)
    with pytest.raises(ValueError):
        ledger.provenance()


def test_merge_offset_ranges():
    assert merge_offset_ranges([]) == []
    assert merge_offset_ranges([(5, 9), (0, 4), (20, 20), (10, 12), (11, 15), (17, 18)]) == [(0, 15), (17, 18),
                                                                                              (20, 20)]


# ------------------------------------------------------------------------------- data-quality periods


def test_periods_and_bad_intervals(ledger):
    h = 3600.0
    t0 = T0.timestamp()
    p1 = ledger.add_period(T0, t0 + h, "HV trip chamber 2", who="shifter", automatic=False)
    p2 = ledger.add_period(t0 + 0.5 * h, t0 + 2 * h, "noisy channel 17", detail={"channel": 17})
    p3 = ledger.add_period(t0 + 2 * h, t0 + 3 * h, "DAQ restart")  # touches p2
    p4 = ledger.add_period(t0 + 5 * h, None, "gas flow low")  # still going on
    ledger.add_period(t0 + 3.5 * h, t0 + 4 * h, "high rate", kind="warning")
    with pytest.raises(ValueError):
        ledger.add_period(t0 + h, t0, "backwards")

    u = datetime.fromtimestamp
    assert ledger.bad_intervals(t0 - h, t0 + 10 * h) == [(T0, u(t0 + 3 * h, UTC)), (u(t0 + 5 * h, UTC),
                                                                                   u(t0 + 10 * h, UTC))]
    assert ledger.bad_intervals(t0 + 0.25 * h, t0 + 4.5 * h) == [(u(t0 + 0.25 * h, UTC), u(t0 + 3 * h, UTC))]
    assert ledger.bad_intervals(t0 + 3.1 * h, t0 + 4.9 * h) == []
    assert ledger.bad_intervals(t0 + 3.1 * h, t0 + 4.9 * h, kinds=("bad", "warning")) == [
        (u(t0 + 3.5 * h, UTC), u(t0 + 4 * h, UTC))]

    assert [p["id"] for p in ledger.periods(kind="bad")] == [p1, p2, p3, p4]
    assert [p["id"] for p in ledger.periods(t0 + 1.5 * h, t0 + 2.5 * h)] == [p2, p3]
    assert [p["id"] for p in ledger.periods(start=t0 + 10 * h)] == [p4]  # open periods reach into the future
    assert [p["id"] for p in ledger.periods(automatic=False)] == [p1]
    got = ledger.period(p2)
    assert (got["reason"], got["detail"], got["automatic"], got["who"]) == ("noisy channel 17", {"channel": 17}, True,
                                                                             None)

    ledger.end_period(p4, t0 + 6 * h)
    ledger.edit_period(p1, reason="HV trip chamber 3", kind="warning", who="expert")
    p = ledger.period(p1)
    assert (p["reason"], p["kind"], p["who"], p["updated_at"] >= p["created_at"]) == ("HV trip chamber 3",
                                                                                      "warning", "expert", True)
    assert ledger.bad_intervals(t0 - h, t0 + 10 * h) == [(u(t0 + 0.5 * h, UTC), u(t0 + 3 * h, UTC)),
                                                         (u(t0 + 5 * h, UTC), u(t0 + 6 * h, UTC))]
    with pytest.raises(ValueError):
        ledger.edit_period(p1, end=t0 - h)
    with pytest.raises(KeyError):
        ledger.end_period(9999, t0)


def test_to_utc_accepts_datetimes_floats_strings():
    naive = datetime(2024, 5, 1, 12, 0)
    plus2 = datetime(2024, 5, 1, 14, 0, tzinfo=UTC).astimezone(__import__("datetime").timezone(timedelta(hours=2)))
    assert to_utc(naive) == to_utc(T0.timestamp()) == to_utc("2024-05-01T12:00:00Z") == to_utc(plus2 - timedelta(
        hours=2)) == T0
    assert to_utc(T0.timestamp()).tzinfo is UTC
    import numpy as np

    assert to_utc(np.datetime64("2024-05-01T12:00:00")) == T0 and to_utc(np.float64(T0.timestamp())) == T0
    with pytest.raises(TypeError):
        to_utc([1])


# ------------------------------------------------------------------------------- annotations and tags


def test_annotations_tags_and_search(ledger):
    run = ledger.start_run(config={}, config_hash="h", run_id="run-1")
    period = ledger.add_period(T0, T0 + timedelta(hours=1), "HV trip")
    drun = ledger.open_detector_run(T0, 0)
    n1 = ledger.annotate("run", run, "Reprocessed after the 50% threshold change", who="ana")
    n2 = ledger.annotate("period", period, "Chamber 2 HV supply replaced", who="bob")
    ledger.annotate("detector_run", drun, "cosmics overnight")
    ledger.tag("period", period, "hv", "hardware", "hv")
    ledger.tag("detector_run", str(drun), "Cosmics")
    ledger.tag("run", run, "reprocessing")

    assert ledger.tags("period", period) == ["hardware", "hv"]
    assert ledger.period(period)["tags"] == ["hardware", "hv"] and ledger.run(run)["tags"] == ["reprocessing"]
    ledger.untag("period", period, "hardware", "never-there")
    assert ledger.tags("period", period) == ["hv"]

    hits = ledger.search("HV")
    assert [(h["target"], h["match"], h["text"]) for h in hits] == [
        ("period", "annotation", "Chamber 2 HV supply replaced"), ("period", "tag", "hv")]
    assert [(h["target"], h["target_id"], h["match"]) for h in ledger.search("cosmics")] == [
        ("detector_run", str(drun), "annotation"), ("detector_run", str(drun), "tag")]
    assert [h["annotation_id"] for h in ledger.search("50%")] == [n1]  # % and _ are literal characters
    assert ledger.search("_") == []

    ledger.edit_annotation(n2, "Chamber 3 HV supply replaced", who="carol")
    (note,) = ledger.annotations("period", period)
    assert (note["text"], note["who"], note["updated_at"] >= note["created_at"]) == (
        "Chamber 3 HV supply replaced", "carol", True)
    assert [a["id"] for a in ledger.annotations()] == [n1, n2, n2 + 1]
    ledger.delete_annotation(n1)
    assert ledger.search("threshold") == []

    with pytest.raises(ValueError, match="unknown target"):
        ledger.annotate("window", 1, "x")
    with pytest.raises(KeyError):
        ledger.tag("period", 12345, "x")
    with pytest.raises(KeyError):
        ledger.annotate("run", "no-such-run", "x")
    with pytest.raises(KeyError):
        ledger.edit_annotation(12345, "x")


# ------------------------------------------------------------------------------------- detector runs


@pytest.fixture
def detector_runs(ledger):
    """Five detector runs, one hour each from T0 (the last still open)."""
    h = timedelta(hours=1)
    specs = [
        ({"trigger": "scint", "hv": 3600, "shift": {"crew": "A"}}, ["cosmics"]),
        ({"trigger": "random", "hv": 3600.0}, ["cosmics", "test"]),
        ({"trigger": "scint", "hv": 3500, "beam": True}, []),
        ({"trigger": "scint", "beam": False, "note": None}, ["cosmics"]),
        ({"hv": "3600", "shift": {"crew": "B"}}, ["calibration"]),
    ]
    runs = []
    for i, (meta, tags) in enumerate(specs):
        if runs:
            ledger.close_detector_run(runs[-1], T0 + i * h, last_orbit=i * 1000 - 1)
        runs.append(ledger.open_detector_run(T0 + i * h, i * 1000, meta, tags=tags))
    return ledger, runs


def test_detector_runs_open_close_current(detector_runs):
    ledger, runs = detector_runs
    cur = ledger.current_detector_run()
    assert cur["id"] == runs[-1] and cur["end"] is None and cur["tags"] == ["calibration"]
    assert ledger.detector_run(runs[0])["last_orbit"] == 999 and ledger.detector_run(runs[0])["end"] == T0 + timedelta(
        hours=1)
    # opening a run while one is open closes the open one at the new start
    new = ledger.open_detector_run(T0 + timedelta(hours=6), 0, {"trigger": "scint"})
    old = ledger.detector_run(runs[-1])
    assert old["end"] == T0 + timedelta(hours=6) and old["last_orbit"] is None
    assert ledger.current_detector_run()["id"] == new
    ledger.close_detector_run(new, T0 + timedelta(hours=7), 123)
    assert ledger.current_detector_run() is None
    with pytest.raises(ValueError):
        ledger.close_detector_run(new, T0)
    with pytest.raises(KeyError):
        ledger.detector_run(9999)


def test_run_queries_compose(detector_runs):
    ledger, r = detector_runs
    h = timedelta(hours=1)
    every = ledger.detector_runs()
    assert [x["id"] for x in every] == r
    cases = [
        (Q.tag("cosmics"), {r[0], r[1], r[3]}),
        (Q.meta(trigger="scint"), {r[0], r[2], r[3]}),
        (Q.between(T0 + 1.5 * h, T0 + 3 * h), {r[1], r[2]}),
        (Q.between(T0 + 10 * h), {r[4]}),  # the open run goes on
        (Q.between(end=T0 + h), {r[0]}),
        (Q.between(T0 + 1.5 * h, T0 + 3 * h) & Q.tag("cosmics") | Q.meta(trigger="scint"), {r[0], r[1], r[2], r[3]}),
        (Q.between(T0 + 1.5 * h, T0 + 3 * h) & (Q.tag("cosmics") | Q.meta(trigger="scint")), {r[1], r[2]}),
        (Q.tag("cosmics") & ~Q.meta(trigger="scint"), {r[1]}),
        (~Q.tag("cosmics"), {r[2], r[4]}),
        (~Q.meta(trigger="scint"), {r[1], r[4]}),  # a missing key is "not equal"
        (~~Q.meta(trigger="scint"), {r[0], r[2], r[3]}),
        (Q.meta(hv=3600), {r[0], r[1]}),  # 3600 == 3600.0, but not the string "3600"
        (Q.meta(hv="3600"), {r[4]}),
        (Q.meta(beam=True), {r[2]}),
        (Q.meta(beam=False), {r[3]}),
        (Q.meta(note=None), {r[3]}),
        (~Q.meta(note=None), {r[0], r[1], r[2], r[4]}),
        (Q.meta(trigger="scint", hv=3600), {r[0]}),
        (Q.meta(shift={"crew": "A"}), {r[0]}),  # nested JSON values compare whole
        (~Q.meta(shift={"crew": "A"}) & Q.tag("calibration"), {r[4]}),
        (Q.meta(shift={"crew": "A"}) | Q.tag("test"), {r[0], r[1]}),
        (Q.tag("nope") | Q.meta(trigger="nope"), set()),
    ]
    for query, expected in cases:
        got = ledger.detector_runs(query)
        assert ids(got) == expected, query
        assert {x["id"] for x in every if query.matches(x)} == expected, query  # Python and SQL agree
        assert [x["id"] for x in got] == sorted(expected)
    with pytest.raises(TypeError):
        Q.tag("a") & "b"
    with pytest.raises(ValueError):
        Q.meta()


# ------------------------------------------------------------------------------ long-task state history


def test_task_history(ledger):
    ledger.append_state("alert-1", "received", task_kind="alert", at=T0, detail={"notice": "GCN 123"})
    ledger.append_state("alert-1", "analysing", at=T0 + timedelta(seconds=5))
    ledger.append_state("alert-2", "received", task_kind="alert", at=T0 + timedelta(seconds=1))
    ledger.append_state("alert-1", "done", at=T0 + timedelta(seconds=9), detail={"result": "no excess"})
    ledger.append_state("snap-1", "running", task_kind="snapshot", at=T0 + timedelta(seconds=2))
    hist = ledger.task_history("alert-1")
    assert [(x["state"], x["task_kind"]) for x in hist] == [("received", "alert"), ("analysing", "alert"),
                                                           ("done", "alert")]
    assert hist[0]["detail"] == {"notice": "GCN 123"} and hist[-1]["at"] == T0 + timedelta(seconds=9)
    assert ledger.current_state("alert-1") == "done" and ledger.current_state("nope") is None
    assert [(t["task_id"], t["state"], t["states"]) for t in ledger.tasks()] == [
        ("alert-1", "done", 3), ("alert-2", "received", 1), ("snap-1", "running", 1)]
    assert [t["task_id"] for t in ledger.tasks(kind="alert")] == ["alert-1", "alert-2"]
    assert [t["task_id"] for t in ledger.tasks(kind="alert", state="received")] == ["alert-2"]
    assert ledger.tasks(state="analysing") == []  # only the current state counts
    (t1,) = [t for t in ledger.tasks() if t["task_id"] == "alert-1"]
    assert (t1["first_at"], t1["since"], t1["detail"]) == (T0, T0 + timedelta(seconds=9), {"result": "no excess"})
    with pytest.raises(ValueError):
        ledger.append_state("alert-1", "x", task_kind="snapshot")


def test_task_history_is_append_only(ledger):
    ledger.append_state("alert-1", "received", task_kind="alert")
    ledger.append_state("alert-1", "done")
    with pytest.raises(AppendOnlyError), ledger.session(write=True) as s:
        s.scalars(sa.select(TaskState)).first().state = "tampered"
    with pytest.raises(AppendOnlyError), ledger.session() as s:
        s.delete(s.scalars(sa.select(TaskState)).first())
    with pytest.raises(AppendOnlyError), ledger.session() as s:
        s.execute(sa.update(TaskState).values(state="tampered"))
    with pytest.raises(AppendOnlyError), ledger.session() as s:
        s.execute(sa.delete(TaskState))
    for sql in ("UPDATE task_states SET state = 'tampered'", "DELETE FROM task_states"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), ledger.engine.begin() as c:
            c.exec_driver_sql(sql)  # below the ORM: the database's trigger refuses
    if ledger.engine.dialect.name == "postgresql":
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), ledger.engine.begin() as c:
            c.exec_driver_sql("TRUNCATE task_states")
    assert [x["state"] for x in ledger.task_history("alert-1")] == ["received", "done"]
    ledger.append_state("alert-1", "archived")  # appending still works
    assert ledger.current_state("alert-1") == "archived"
