"""The analysis worker pool: outcomes, time limits, cancellation; one bad job never holds up the others."""

from __future__ import annotations

import time

import pytest
from waiting import wait_for as wait_for_condition

from dtlive.alerts.workers import WorkerPool


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(2, preload=())
    yield p
    p.close()


def wait_for(pool, n, timeout=20.0):
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += pool.poll(timeout=0.2)
    return {o.job_id: o for o in got}


def test_succeeded_failed_and_timed_out_side_by_side(pool):
    pool.submit("slow", "time:sleep", (30,), timeout_s=1.0)
    pool.submit("ok", "math:factorial", (5,), timeout_s=10)
    pool.submit("bad", "math:factorial", (-1,), timeout_s=10)
    got = wait_for(pool, 3)
    assert got["ok"].state == "succeeded" and got["ok"].value == 120
    assert got["bad"].state == "failed" and "ValueError" in got["bad"].error
    assert got["slow"].state == "timed_out" and got["slow"].seconds >= 1.0
    pool.submit("after", "math:factorial", (3,), timeout_s=10)  # the killed worker was replaced
    assert wait_for(pool, 1)["after"].value == 6


def test_cancel_queued_and_running(pool, tmp_path):
    # a job that says it runs (a file appears) and then keeps running
    script = "import pathlib, time\npathlib.Path(__file__ + '.running').touch()\ntime.sleep(30)\n"
    for name in ("run-a", "run-b"):
        (tmp_path / name).write_text(script)
        pool.submit(name, "runpy:run_path", (str(tmp_path / name),), timeout_s=60)
    pool.submit("queued", "time:sleep", (30,), timeout_s=60)
    wait_for_condition(lambda: all((tmp_path / f"{n}.running").exists() for n in ("run-a", "run-b")), 30,
                       "both workers running their job")
    cancelled = {o.job_id: o.state for o in pool.cancel(["run-a", "queued", "run-b"])}
    assert cancelled == {"run-a": "cancelled", "run-b": "cancelled", "queued": "cancelled"}
    assert pool.busy == 0
    pool.submit("next", "math:factorial", (4,), timeout_s=10)
    assert wait_for(pool, 1)["next"].value == 24
