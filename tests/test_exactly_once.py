"""kill -9 the processor in the middle of a replay, restart it: every hit counted once, no window twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer
from datafiles import RUN_CSV

from dtlive.config import load_config
from dtlive.emulator import emulate, file_chunks
from dtlive.kafka import ensure_topics
from dtlive.results import read_messages, read_results

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def start_processor(broker, topics, *extra):
    args = [sys.executable, "-m", "dtlive.cli", "--bootstrap", broker, "process", "--input", topics["hits_topic"],
            "--output", topics["monitor_topic"], "--rejected", topics["rejected_topic"], "--group-id",
            topics["group_id"], "--from-beginning", "--batch-size", "300", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "CI": "true"})


@pytest.mark.parametrize("kill_after_windows,partitions", [(2, 1), (9, 1), (5, 4)])
def test_kill_9_mid_replay_then_restart_counts_every_hit_once(broker, topics, kill_after_windows, partitions):
    ensure_topics(load_config({}, env={}), broker, {topics["hits_topic"]: partitions})
    emulate(Producer({"bootstrap.servers": broker, "linger.ms": 5}), topics["hits_topic"],
            file_chunks([str(RUN_CSV)]), rate=None, fmt="csv", progress=False, partitions=partitions, key="chamber")

    first = start_processor(broker, topics)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None:
        if len(read_messages(broker, topics["monitor_topic"], timeout=2)) >= kill_after_windows:
            break
        time.sleep(0.05)
    assert first.poll() is None, "the processor finished before it could be killed: slow it down"
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    published_before = len(read_messages(broker, topics["monitor_topic"], timeout=5))
    assert kill_after_windows <= published_before < 17  # killed mid-replay

    second = start_processor(broker, topics, "--until-end")
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out.decode()[-2000:]

    msgs = read_messages(broker, topics["monitor_topic"])
    ids = [m["window"]["id"] for m in msgs]
    assert len(ids) == len(set(ids)), "a window was published twice"
    runs = {m["provenance"]["run_id"] for m in msgs}
    assert len(runs) == 2  # both runs published
    ds = read_results(broker, topics["monitor_topic"]).sum("time")
    import pandas as pd
    df = pd.read_csv(RUN_CSV)
    exp = (df.ORBIT_CNT // 22447).value_counts().to_dict()
    trail = [(m["window"]["id"], m["provenance"]["run_id"][:4], m["total_hits"] - exp[m["window"]["id"]],
              m["provenance"]["input_position"][0]["offset"], m["provenance"]["restart_offsets"][0]["offset"],
              m["provenance"]["inputs"][0]) for m in msgs]
    assert int(ds.total_hits) == 159_616, "\n".join(map(str, trail))
    assert ds.hits_per_chamber.values.tolist() == [24_253, 35_907, 60_564, 36_572]
    assert int(ds.rows) == 159_616  # every row accounted once in the bookkeeping counters too
