"""End to end on the real broker: emulator, processor and recorder running; notices sent; analyses run,
their states recorded append-only, results published; tests, duplicates, retractions and broken notices."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from contracts import valid, valid_dead_letter
from datafiles import ALERTS
from waiting import wait_for

from dtlive.alerts.listener import AlertListener
from dtlive.alerts.rules import load_rules
from dtlive.alerts.send import load_notice, send_notice, topic_for
from dtlive.config import load_config
from dtlive.kafka.clients import ensure_topics
from dtlive.kafka.emulator import emulate, simulated_chunks
from dtlive.storage.history import HistoryStore
from dtlive.storage.ledger import Ledger
from dtlive.storage.recorder import Recorder
from dtlive.streaming.processor import Processor

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RULES = """
[[rule]]
name = "all-gcn"
topics = ["gcn.notices.*"]
analyses = ["rate_excess", "snapshot"]
[rule.params.rate_excess]
on_before_s = 2
on_after_s = 2
background_s = 12
gap_s = 1
[rule.params.snapshot]
before_s = 4
after_s = 4
"""


def read_all(bootstrap: str, topic: str) -> list:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out, quiet = [], time.monotonic()
    while time.monotonic() - quiet < 1.5:
        msgs = [m for m in c.consume(500, 0.3) if not m.error()]
        if msgs:
            quiet = time.monotonic()
        out += msgs
    c.close()
    return out


@pytest.fixture(scope="module")
def alerts_broker(tmp_path_factory):
    """A broker of this module's own: notice topics have fixed names (``gcn.notices.*``) that other tests write
    to as well, and the listener reads them from the beginning, so the session broker would make the counts
    below depend on which tests ran before."""
    from conftest import free_port

    from dtlive.kafka.broker import EmbeddedBroker

    b = EmbeddedBroker(port=free_port(), state_dir=tmp_path_factory.mktemp("alerts-broker")).start()
    yield b.bootstrap
    b.stop()


@pytest.fixture(scope="module")
def live(alerts_broker, tmp_path_factory):
    """Simulated DAQ -> processor -> recorder (ledger + history), running in threads for the module."""
    broker = alerts_broker
    tmp = tmp_path_factory.mktemp("alerts")
    tag = tmp.name[-6:]
    cfg = load_config({"bootstrap": broker, "hits_topic": f"hits-a{tag}", "monitor_topic": f"mon-a{tag}",
                       "rejected_topic": f"rej-a{tag}", "quality_topic": f"dq-a{tag}", "group_id": f"proc-a{tag}",
                       "window_s": 1, "lateness_s": 0.2, "analyses_topic": f"analyses-a{tag}",
                       "alerts_rejected_topic": f"alerts-rej-a{tag}", "alerts_group_id": f"alerts-a{tag}",
                       "alert_topics": "gcn.notices.*,igwn.gwalert"}, env={})
    ensure_topics(cfg, broker, [cfg.hits_topic])
    ledger_url = f"sqlite:///{tmp / 'ledger.sqlite'}"
    ledger, history = Ledger(ledger_url), HistoryStore(tmp / "history")
    stop = threading.Event()
    threads = [threading.Thread(target=emulate, daemon=True, args=(Producer({"bootstrap.servers": broker}),
                                                                   cfg.hits_topic, simulated_chunks(rows_per_s=3000)),
                                kwargs={"rate": 3000, "fmt": "daq64", "progress": False, "stop": stop.is_set})]
    proc = Processor(cfg, broker, from_beginning=True)
    rec = Recorder(cfg, broker, ledger=ledger, history=history)
    threads += [threading.Thread(target=proc.run, daemon=True), threading.Thread(target=rec.run, daemon=True)]
    for t in threads:
        t.start()
    wait_for(lambda: history.windows() >= 16, 180, lambda: f"16 recorded windows (have {history.windows()})",
             interval=0.5)  # some background before the triggers
    yield {"cfg": cfg, "ledger": ledger, "ledger_url": ledger_url, "history": history, "tmp": tmp,
           "broker": broker}
    stop.set()
    proc.stop()
    rec.stop()
    for t in threads:
        t.join(15)
    proc.close()
    rec.close()


def test_notices_run_analyses_with_states_and_published_results(live):
    cfg, broker = live["cfg"], live["broker"]
    listener = AlertListener(cfg, broker, ledger=live["ledger"], rules=load_rules(RULES), workers=2, timeout_s=60,
                             artifacts_dir=live["tmp"] / "artifacts", history_path=str(live["tmp"] / "history"),
                             ledger_url=live["ledger_url"])
    producer = Producer({"bootstrap.servers": broker})
    trigger = time.time() - 4  # recorded already, with background before it
    files = sorted(p.name for p in ALERTS.glob("*.json") if "Retraction" not in p.name)  # every example notice
    for name in files:
        ensure_topics(cfg, broker, [topic_for(load_notice(str(ALERTS / name)))])
    thread = threading.Thread(target=listener.run, kwargs={"max_seconds": 400}, daemon=True)
    thread.start()
    try:
        for name in files:
            send_notice(producer, load_notice(str(ALERTS / name)), trigger_time=trigger)
        send_notice(producer, load_notice(str(ALERTS / "swift_bat_Guano.json")), trigger_time=trigger)  # duplicate
        producer.produce("gcn.notices.swift.bat.guano", b'{"mission": "Swift", "trigger_time": "yesterday"')
        producer.flush(10)
        expected_jobs = 2 * (len(files) - 1)  # rate_excess + snapshot for each; the Super-K test notice is ignored
        wait_for(lambda: listener.counts["analyses.succeeded"] + listener.counts["analyses.failed"] >= expected_jobs,
                 180, lambda: f"{expected_jobs} finished analyses ({dict(listener.counts)})", interval=0.2)
        # each result is published, then its `published` state written
        wait_for(lambda: len(jobs := list(listener.jobs)) >= expected_jobs and all(
                     live["ledger"].current_state(j) == "published" for j in jobs),
                 60, lambda: f"every job published ({dict(listener.counts)})", interval=0.2)
        assert listener.counts["analyses.succeeded"] == expected_jobs, dict(listener.counts)
        assert listener.counts["ignore_test"] == 1 and listener.counts["ignore_duplicate"] == 1
        assert listener.counts["rejected.not_json"] == 1

        results = [valid(m) for m in read_all(broker, cfg.analyses_topic)]
        rate = {r["alert_id"]: r for r in results if r["analysis"] == "rate_excess"}
        assert set(rate) == {"Swift:694215995", "Super-Kamiokande:SN.095001.000001", "IceCube:S230914ak",
                             "Einstein Probe:01708973486", "Fermi:745121685", "KM3NeT:1"}
        assert all(r["summary"]["status"] == "ok" for r in rate.values()), [r["summary"] for r in rate.values()]
        swift = rate["Swift:694215995"]
        assert swift["schema"] == "dtlive.analysis/1" and swift["summary"]["status"] == "ok", swift["summary"]
        assert swift["provenance"]["inputs"], "the result names the detector data it used"
        snap = next(r for r in results if r["analysis"] == "snapshot" and r["alert_id"] == "Swift:694215995")
        assert any(a.endswith(".nc") for a in snap["artifacts"])

        job = next(j for j, info in listener.jobs.items() if info["analysis"] == "rate_excess"
                   and info["alert"]["id"] == "Swift:694215995")
        states = [s["state"] for s in live["ledger"].task_history(job)]
        assert states == ["queued", "running", "succeeded", "published"]
        alert_states = [s["state"] for s in live["ledger"].task_history("alert:Swift:694215995#1")]
        assert alert_states[:2] == ["received", "matched"]

        rejected = read_all(broker, cfg.alerts_rejected_topic)
        assert [valid_dead_letter(m)["reason"] for m in rejected] == ["not_json"]

        # the retraction marks the finished Swift results retracted and says so on dt.analyses
        send_notice(producer, load_notice(str(ALERTS / "swift_bat_Guano.Retraction.json")), trigger_time=trigger)
        wait_for(lambda: listener.counts["retractions"] >= 1, 60, "the retraction to be handled", interval=0.2)
        assert [s["state"] for s in live["ledger"].task_history(job)][-1] == "retracted"

        def retractions() -> list[dict]:
            return [r for r in map(valid, read_all(broker, cfg.analyses_topic)) if r.get("retracted")]

        retracted = wait_for(lambda: len(retractions()) >= 2 and retractions(), 60, "2 retraction results")
        assert {(r["alert_id"], r["analysis"]) for r in retracted} == {
            ("Swift:694215995", "rate_excess"), ("Swift:694215995", "snapshot")}

        # the dashboard's alert panel follows dt.analyses live
        from dtlive.ui.live import ResultsFeed
        from dtlive.ui.widgets import AlertPanel, parse_analysis

        panel = AlertPanel()
        feed = ResultsFeed(broker, panel.add, topic=cfg.analyses_topic, backfill=50, parse=parse_analysis).start()
        try:
            wait_for(lambda: "IceCube:S230914ak" in panel.widget.value, 45, "the alert panel to show IceCube",
                     interval=0.2)
        finally:
            feed.stop()
        assert "IceCube:S230914ak" in panel.widget.value and " σ (chamber " in panel.widget.value
        assert all(r.get("retracted") for r in panel.rows if r["alert_id"] == "Swift:694215995")
    finally:
        listener.stop()
        thread.join(30)
        listener.close()


def test_a_hanging_analysis_times_out_and_does_not_hold_up_the_others(live):
    from dtlive.alerts.workers import WorkerPool

    pool = WorkerPool(2, preload=())
    try:
        pool.submit("hang", "time:sleep", (60,), timeout_s=1.0)
        pool.submit("quick", "math:factorial", (4,), timeout_s=10)
        got, deadline = {}, time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got.update({o.job_id: o.state for o in pool.poll(0.2)})
        assert got == {"quick": "succeeded", "hang": "timed_out"}
    finally:
        pool.close()


def test_a_failed_and_a_timed_out_analysis_are_published_as_errors_and_shown_on_the_panel(live):
    """Broken and hanging analyses go out on the analyses topic with status error and the reason, so the shift sees
    them where results appear; their ledger state stays failed / timed_out (never "published")."""
    import slow_analysis  # noqa: F401 - the listener knows the analyses its workers run, as with entry points

    from dtlive.alerts.workers import WorkerPool
    from dtlive.ui.widgets import AlertPanel

    cfg, broker = live["cfg"], live["broker"]
    topic = "gcn.notices.swift.bat.guano"
    rules = load_rules(f"""
[[rule]]
name = "broken"
topics = ["{topic}"]
analyses = ["failing_probe", "slow_probe"]
[rule.params.slow_probe]
seconds = 300
""")
    pool = WorkerPool(2, preload=("dtlive.alerts.analyses", "slow_analysis"))
    listener = AlertListener(cfg, broker, ledger=live["ledger"], rules=rules, timeout_s=15, pool=pool,
                             artifacts_dir=live["tmp"] / "artifacts-broken", ledger_url=live["ledger_url"])
    ensure_topics(cfg, broker, [topic])
    producer = Producer({"bootstrap.servers": broker})
    notice = load_notice(str(ALERTS / "swift_bat_Guano.json")).replace(b"694215995", b"694215996")
    thread = threading.Thread(target=listener.run, kwargs={"max_seconds": 60}, daemon=True)
    thread.start()
    try:
        send_notice(producer, notice, trigger_time=time.time())
        wait_for(lambda: listener.counts["analyses.failed"] + listener.counts["analyses.timed_out"] >= 2, 90,
                 lambda: f"both analyses ended ({dict(listener.counts)})", interval=0.2)

        def ours() -> dict[str, dict]:
            return {r["analysis"]: r for r in map(valid, read_all(broker, cfg.analyses_topic))
                    if r.get("alert_id") == "Swift:694215996"}

        got = wait_for(lambda: len(ours()) == 2 and ours(), 60, "both failures on the analyses topic")
    finally:
        listener.stop()
        thread.join(30)
        listener.close()
    failed, hung = got["failing_probe"], got["slow_probe"]
    assert failed["summary"] == {"status": "error", "reason": "failed: ZeroDivisionError: no background windows for "
                                                              "Swift:694215996"}, failed["summary"]
    assert failed["version"] == "3" and failed["artifacts"] == [] and "Traceback" in failed["provenance"]["error"]
    assert hung["summary"] == {"status": "error", "reason": "timed out: over its 15 s limit"}, hung["summary"]
    for job, info in listener.jobs.items():
        states = [s["state"] for s in live["ledger"].task_history(job)]
        assert states[-1] in ("failed", "timed_out") and "published" not in states, (info["analysis"], states)
    panel = AlertPanel()
    panel.add(list(got.values()))
    assert panel.widget.value.count("FAILED: ") == 2 and "ZeroDivisionError" in panel.widget.value
