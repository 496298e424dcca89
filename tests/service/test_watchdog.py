"""The watchdog ends a stalled service (input waiting, nothing processed) with a clear reason, against the real
broker; a loop that stops turning ends the process."""

from __future__ import annotations

import re
import threading
import time

import pytest
from confluent_kafka import Producer
from waiting import wait_for

from dtlive.config import load_config
from dtlive.kafka.clients import ensure_topics
from dtlive.service.watchdog import EXIT_STALLED, Stalled, Watchdog
from dtlive.streaming.processor import Processor


def test_a_processor_whose_input_waits_unconsumed_exits_with_the_reason(broker, topics):
    cfg = load_config({"bootstrap": broker, **topics, "status_interval_s": 0.5, "watchdog_s": 3}, env={})
    ensure_topics(cfg, broker, [cfg.hits_topic])
    proc = Processor(cfg, broker)
    ended: list[BaseException] = []

    def run():
        try:
            proc.run(max_seconds=120)
        except BaseException as exc:  # noqa: BLE001 - what ended the loop is the subject of the test
            ended.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        wait_for(lambda: proc.source.consumer.assignment(), 30, "the processor's assignment")
        proc.source.consumer.pause(proc.source.consumer.assignment())  # as when a consumer loses its fetches
        producer = Producer({"bootstrap.servers": broker})
        for i in range(200):
            producer.produce(cfg.hits_topic, f"2,0,5,{1000 + i},0,0".encode())
        producer.flush(10)
        started = time.monotonic()
        runner.join(60)
        assert not runner.is_alive(), "the watchdog did not end the stalled processor"
        assert isinstance(ended[0], Stalled), ended
        assert ended[0].code == EXIT_STALLED
        # the count comes from the broker's end offsets (Tansu may leave its newest batch out of them)
        waiting = re.search(r"(\d+) input messages waiting on ", str(ended[0]))
        assert waiting and 1 <= int(waiting.group(1)) <= 200 and "nothing processed for" in str(ended[0])
        assert time.monotonic() - started < 30
    finally:
        proc.stop()
        runner.join(10)
        proc.close()


def test_a_loop_that_stops_turning_ends_the_process_and_says_where_it_hung(caplog):
    exits: list[int] = []
    hung = threading.Event()

    def loop_that_hangs_in_a_call():
        dog.start()
        dog.beat()
        hung.wait(20)

    dog = Watchdog("recorder", stall_s=1, stuck_s=1.5, exit=exits.append)
    loop = threading.Thread(target=loop_that_hangs_in_a_call, daemon=True)
    loop.start()
    try:
        wait_for(lambda: exits, 10, "the watchdog to end the process")
    finally:
        hung.set()
        loop.join(5)
        dog.close()
    assert exits == [EXIT_STALLED]
    said = [r.getMessage() for r in caplog.records if r.name == "dtlive.service.watchdog"]
    assert len(said) == 1 and "in loop_that_hangs_in_a_call" in said[0] and "in wait" in said[0], said


def test_a_turning_loop_is_left_alone():
    exits: list[int] = []
    dog = Watchdog("recorder", stall_s=1, stuck_s=1.0, exit=exits.append).start()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        dog.beat()
        time.sleep(0.1)
    dog.close()
    assert exits == []


@pytest.mark.parametrize("stall_s", [0, 60])
def test_no_stall_below_the_limit_or_when_switched_off(stall_s):
    Watchdog("processor", stall_s=stall_s).check(stalled_s=59, why="x")
