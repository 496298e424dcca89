"""kill -9 the processor in the middle of a replay, restart it: every hit counted once, no window twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from contracts import read_messages, read_results
from datafiles import RUN_CSV
from feeds import RUN_ROWS, ThrottledFeed
from waiting import wait_for

from dtlive.config import load_config
from dtlive.kafka.clients import ensure_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def start_processor(broker, topics, *extra):
    args = [sys.executable, "-m", "dtlive", "--bootstrap", broker, "process", "--input", topics["hits_topic"],
            "--output", topics["monitor_topic"], "--rejected", topics["rejected_topic"], "--group-id",
            topics["group_id"], "--from-beginning", "--batch-size", "300", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "CI": "true"})


@pytest.mark.parametrize("kill_after_windows,partitions", [(2, 1), (9, 1), (5, 4)])
def test_kill_9_mid_replay_then_restart_counts_every_hit_once(broker, topics, kill_after_windows, partitions):
    ensure_topics(load_config({}, env={}), broker, {topics["hits_topic"]: partitions})
    # the run arrives at 20k rows/s while the processor works; the windows after the kill point are held back
    # until the kill, so it happens mid-stream however fast the machine is
    feed = ThrottledFeed(broker, topics["hits_topic"], rate=20_000, hold_after_windows=kill_after_windows + 2,
                         partitions=partitions, key="chamber")
    first = start_processor(broker, topics)
    feed.start()
    try:
        wait_for(lambda: first.poll() is not None
                 or len(read_messages(broker, topics["monitor_topic"], timeout=2)) >= kill_after_windows,
                 120, f"{kill_after_windows} windows from the first processor")
        assert first.poll() is None, first.communicate()[0].decode()[-2000:]
        assert feed.is_alive() and not feed.released.is_set(), "the input must still be arriving at the kill"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        sent_at_kill = feed.rows_yielded
    finally:
        feed.release()
        feed.join(60)
    assert feed.error is None and feed.stats is not None and feed.stats.rows == RUN_ROWS
    assert sent_at_kill < RUN_ROWS  # killed while input was still to come
    published_before = len(read_messages(broker, topics["monitor_topic"], timeout=5))
    assert kill_after_windows <= published_before < 17  # killed mid-replay: windows were left to publish

    second = start_processor(broker, topics, "--until-end")
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out.decode()[-2000:]
    assert re.search(r"run kept in the ledger with \d+\.\d\d s of CPU$", out.decode().strip()), out.decode()[-500:]

    msgs = read_messages(broker, topics["monitor_topic"])
    ids = [m["window"]["id"] for m in msgs]
    assert len(ids) == len(set(ids)), "a window was published twice"
    assert len(msgs) > published_before  # the restart published the windows the kill left
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
