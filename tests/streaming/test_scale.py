"""Scale-out on Dask: a LocalCluster of 2 worker processes gives exactly the single-process results.

``dtlive process --dask``: partition actors on the workers, partial products merged by the driver.
Also: a worker killed mid-replay (every hit still counted once), the CLI, kill -9 of the driver and a restart
of the other kind. ``dtlive replay --dask`` is in tests/streaming/test_replay.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import KafkaException, Producer
from contracts import read_messages
from datafiles import RUN_CSV
from feeds import RUN_ROWS, ThrottledFeed
from waiting import wait_for

from dtlive.config import load_config
from dtlive.core import detector as det
from dtlive.core.simulate import simulate
from dtlive.kafka.clients import ensure_topics
from dtlive.kafka.emulator import Chunk, emulate, file_chunks
from dtlive.streaming.processor import Processor

PER_CHAMBER = [24_253, 35_907, 60_564, 36_572]


@pytest.fixture(scope="module")
def client():
    from dtlive.streaming.dask_driver import dask_client

    with dask_client("local:2") as c:
        yield c


def published(bootstrap: str, topic: str) -> int:
    """Windows published on ``topic`` so far; 0 while the shared broker, busy with other tests, does not answer in
    time (a wait that asks again)."""
    try:
        return len(read_messages(bootstrap, topic, timeout=5))
    except KafkaException:
        return 0


def comparable(msg: dict) -> dict:
    """A result's products; bookkeeping that depends on batch boundaries (rows counted since the previous window,
    restart offsets) or on the run (ids, epoch, host) is compared in sums elsewhere or not at all."""
    w = msg["window"]
    return {"window": (w["id"], w["first_orbit"], w["last_orbit"]), "histograms": msg["histograms"],
            **{k: v for k, v in msg.items() if k not in ("provenance", "window", "counts", "histograms")},
            "counts": {k: v for k, v in msg["counts"].items() if k not in ("rows", "ancillary", "rejected")}}


def test_local_workers_keep_glibc_dynamic_mmap_threshold(client):
    """Dask's default MALLOC_TRIM_THRESHOLD_ (set by its nannies) made every large array a fresh mmap: ~40 % CPU."""
    assert set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {None}
    assert len(client.nthreads()) == 2


def produce_run(broker, topic, key="chamber"):
    """Run 591 as daq64 on 4 partitions keyed by ``key`` (the emulator's layout)."""
    ensure_topics(load_config({}, env={}), broker, {topic: 4})
    emulate(Producer({"bootstrap.servers": broker, "linger.ms": 5}), topic, file_chunks([str(RUN_CSV)]),
            rate=None, fmt="daq64", rows_per_message=997, progress=False, partitions=4, key=key)


def produce_simulated_blocks(broker, topic, seconds=12.0):
    """Simulated muons (with scintillator hits) whose rows go round-robin in blocks of 150 to 4 partitions:
    every chamber and the scintillator are spread over all partitions, so the merge needs the masks of
    shared chambers and the merged scintillator table."""
    rows = simulate(seconds, seed=5)
    hits = rows.select(rows.head == det.HIT_HEAD)
    ensure_topics(load_config({}, env={}), broker, {topic: 4})
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    block = (np.arange(len(hits)) // 150) % 4
    for p in range(4):
        emulate(producer, topic, [Chunk(hits.select(block == p))], rate=None, fmt="daq64", rows_per_message=400,
                progress=False, partition=p)
    return len(hits)


def run_both(broker, topics, client, **kw) -> dict:
    out = {}
    for name in ("single", "dask"):
        from dtlive.streaming.dask_driver import DaskProcessor

        cfg = load_config({"bootstrap": broker, **topics, "monitor_topic": f"{topics['monitor_topic']}-{name}",
                           "group_id": f"{topics['group_id']}-{name}"}, env={})
        proc = DaskProcessor(cfg, broker, client, **kw) if name == "dask" else Processor(cfg, broker, **kw)
        proc.run(until_end=True, max_seconds=120)
        proc.close()
        out[name] = read_messages(broker, cfg.monitor_topic)
    return out


@pytest.mark.kafka
def test_dask_processor_equals_single_process(broker, topics, client):
    produce_run(broker, topics["hits_topic"])
    out = run_both(broker, topics, client, from_beginning=True, batch_size=50)  # many windows closed mid-batch
    assert len(out["dask"]) == len(out["single"]) >= 15
    assert [comparable(m) for m in out["dask"]] == [comparable(m) for m in out["single"]]
    assert sum(m["total_hits"] for m in out["dask"]) == sum(m["counts"]["rows"] for m in out["dask"]) == 159_616
    assert [sum(m["hits_per_chamber"][c] for m in out["dask"]) for c in range(4)] == PER_CHAMBER


@pytest.mark.kafka
def test_dask_processor_merges_chambers_and_scintillator_spread_over_partitions(broker, topics, client):
    n = produce_simulated_blocks(broker, topics["hits_topic"])
    out = run_both(broker, topics, client, from_beginning=True, batch_size=20)
    assert len(out["dask"]) == len(out["single"]) >= 5
    assert [comparable(m) for m in out["dask"]] == [comparable(m) for m in out["single"]]
    assert sum(m["total_hits"] for m in out["dask"]) == n
    drift = sum(sum(m["histograms"]["drift_time_ns"][f"chamber_{c}"]["bin_counts"]) for m in out["dask"]
                for c in range(4))
    assert drift > 1000  # the drift exchange really ran
    mult = [sum(sum(m["histograms"]["active_channels_per_orbit"][f"chamber_{c}"]["bin_counts"][2:])
                for m in out["dask"]) for c in range(4)]
    assert min(mult) > 100  # orbits with >= 3 distinct channels: muons, merged across partitions


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_killed_mid_replay_counts_every_hit_once(broker, topics, client):
    from dtlive.streaming.dask_driver import DaskProcessor

    produce_run(broker, topics["hits_topic"])
    cfg = load_config({"bootstrap": broker, **topics}, env={})
    # one consume call of 2 messages per step: the replay takes many rounds
    proc = DaskProcessor(cfg, broker, client, from_beginning=True, batch_size=2, step_seconds=0)
    pids = [s.where["pid"] for s in proc.slots]
    assert set(pids) <= set(client.run(os.getpid).values())
    killed = []  # (slot, its worker's pid, windows published then)

    def kill_half_way(_):
        """Kill the worker of an actor that still reads, once windows are published. The actors step
        independently, so either may be ahead; the one behind cannot be done while the windows it has not
        closed are still to come."""
        reading = [i for i, s in enumerate(proc.slots) if not s.done]
        if not killed and proc.publisher.published >= 2 and reading:
            i = reading[0]
            os.kill(pids[i], signal.SIGKILL)
            killed.append((i, pids[i], proc.publisher.published))

    proc.publisher.on_publish.append(kill_half_way)
    proc.run(until_end=True, max_seconds=90)
    proc.close()
    assert killed, "no actor was still reading after two windows were published"
    slot, victim, published_then = killed[0]
    assert proc.lost_actors == 1 and proc.slots[slot].where["pid"] != victim
    assert 1 <= published_then < proc.publisher.published  # killed mid-replay, after some windows were published
    msgs = read_messages(broker, cfg.monitor_topic)
    ids = [m["window"]["id"] for m in msgs]
    assert len(ids) == len(set(ids)), "a window was published twice"
    assert ids == sorted(ids) and len(ids) > 10
    assert sum(m["total_hits"] for m in msgs) == sum(m["counts"]["rows"] for m in msgs) == 159_616
    assert [sum(m["hits_per_chamber"][c] for m in msgs) for c in range(4)] == PER_CHAMBER
    per_window = (pd.read_csv(RUN_CSV).ORBIT_CNT // det.orbits_for_seconds(cfg.window_s)).value_counts().to_dict()
    assert {m["window"]["id"]: m["total_hits"] for m in msgs} == per_window  # every window whole


@pytest.mark.kafka
@pytest.mark.slow
def test_process_dask_command(broker, topics):
    produce_run(broker, topics["hits_topic"], key="fpga")
    args = [sys.executable, "-m", "dtlive", "--bootstrap", broker, "process", "--input", topics["hits_topic"],
            "--output", topics["monitor_topic"], "--rejected", topics["rejected_topic"], "--group-id",
            topics["group_id"], "--from-beginning", "--until-end", "--dask", "local:2"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env={**os.environ, "CI": "true"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 partition actors on 2 Dask workers" in done.stderr
    msgs = read_messages(broker, topics["monitor_topic"])
    assert sum(m["total_hits"] for m in msgs) == 159_616
    assert [sum(m["hits_per_chamber"][c] for m in msgs) for c in range(4)] == PER_CHAMBER
    assert len({m["window"]["id"] for m in msgs}) == len(msgs) >= 15
    assert {m["provenance"]["processor"] for m in msgs} == {topics["group_id"]}


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("first,second", [("dask", "single"), ("single", "dask")])
def test_kill_9_driver_then_restart_the_other_kind_counts_every_hit_once(broker, topics, first, second):
    """The Dask driver writes the single processor's checkpoint: either kind resumes the other's series."""
    ensure_topics(load_config({}, env={}), broker, {topics["hits_topic"]: 4})
    # the input arrives at 12k rows/s while the first run processes it; the windows after the first 6 are held
    # back until the kill, so it happens mid-stream however fast the machine is
    feed = ThrottledFeed(broker, topics["hits_topic"], rate=12_000, hold_after_windows=6, partitions=4, key="chamber")
    base = [sys.executable, "-m", "dtlive", "--bootstrap", broker, "process", "--input", topics["hits_topic"],
            "--output", topics["monitor_topic"], "--rejected", topics["rejected_topic"], "--group-id",
            topics["group_id"], "--from-beginning", "--batch-size", "300"]
    kind = {"dask": ["--dask", "local:2"], "single": []}
    env = {**os.environ, "CI": "true"}
    proc = subprocess.Popen([*base, *kind[first]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)  # its own process group: the Dask workers die with it
    feed.start()
    try:
        wait_for(lambda: proc.poll() is not None or published(broker, topics["monitor_topic"]) >= 2, 120,
                 "2 windows from the first run")
        assert proc.poll() is None, "the first run exited before it could be killed"
        assert feed.is_alive() and not feed.released.is_set(), "the input must still be arriving at the kill"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        sent_at_kill = feed.rows_yielded
    finally:
        feed.release()
        feed.join(60)
    assert feed.error is None and feed.stats is not None and feed.stats.rows == RUN_ROWS
    assert sent_at_kill < RUN_ROWS  # killed while input was still to come
    before = len(read_messages(broker, topics["monitor_topic"], timeout=5))
    assert 2 <= before < 17  # of 17 windows

    done = subprocess.run([*base, *kind[second], "--until-end"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    msgs = read_messages(broker, topics["monitor_topic"])
    ids = [m["window"]["id"] for m in msgs]
    assert len(ids) == len(set(ids)), "a window was published twice"
    assert len({m["provenance"]["run_id"] for m in msgs}) == 2 and len(msgs) > before
    assert sum(m["total_hits"] for m in msgs) == sum(m["counts"]["rows"] for m in msgs) == 159_616
    assert [sum(m["hits_per_chamber"][c] for m in msgs) for c in range(4)] == PER_CHAMBER
    per_window = (pd.read_csv(RUN_CSV).ORBIT_CNT // det.orbits_for_seconds(2.0)).value_counts().to_dict()
    assert {m["window"]["id"]: m["total_hits"] for m in msgs} == per_window
