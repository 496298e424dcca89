"""Time-limited analysis workers: long-lived processes, one job at a time each, killed when over time.

The listener never runs an analysis itself. :class:`WorkerPool` keeps ``n`` spawned worker
processes (started once, so a job pays no interpreter start-up), hands each a job, and
reports every outcome through :meth:`WorkerPool.poll`: ``succeeded`` (with the function's
return value), ``failed`` (with the traceback text), ``timed_out`` (the worker is killed and
replaced) or ``cancelled``. One failing or hanging job never holds up the others.

>>> pool = WorkerPool(2)                                                 # doctest: +SKIP
>>> pool.submit("job-1", "math:factorial", (5,), timeout_s=10)          # doctest: +SKIP
>>> pool.poll(timeout=5)                                                 # doctest: +SKIP
[Outcome(job_id='job-1', state='succeeded', value=120, error=None, seconds=0.001)]
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import queue
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    """How one job ended.

    >>> pool = WorkerPool(1)  # doctest: +SKIP
    >>> pool.submit("job-1", "math:factorial", (5,))  # doctest: +SKIP
    >>> pool.cancel(["job-1"]) or pool.poll(timeout=5)  # doctest: +SKIP
    [Outcome(job_id='job-1', state='succeeded', value=120, error=None, seconds=0.001)]
    >>> Outcome("job-2", "timed_out", error="over its 60 s limit", seconds=60.0).state
    'timed_out'
    """

    job_id: str
    state: str  # succeeded | failed | timed_out | cancelled
    value: Any = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class _Job:
    job_id: str
    target: str  # "module:function"
    args: tuple
    timeout_s: float
    started: float = 0.0


def _call(target: str, args: tuple) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(*args)


def _worker_main(jobs: mp.Queue, results: mp.Queue, preload: tuple[str, ...]) -> None:
    for module in preload:  # import heavy modules once, before the first job
        with contextlib.suppress(Exception):  # the job that needs it will report the error
            importlib.import_module(module)
    while True:
        item = jobs.get()
        if item is None:
            return
        job_id, target, args = item
        t0 = time.monotonic()
        try:
            value = _call(target, args)
            results.put((job_id, "succeeded", value, None, time.monotonic() - t0))
        except BaseException:  # noqa: BLE001 - report everything, keep the worker alive
            results.put((job_id, "failed", None, traceback.format_exc(limit=20), time.monotonic() - t0))


@dataclass
class _Worker:
    process: mp.Process
    jobs: mp.Queue
    job: _Job | None = None


@dataclass
class WorkerPool:
    """``n`` worker processes running ``module:function`` jobs with a per-job time limit.

    >>> pool = WorkerPool(2, preload=("dtlive.alerts.analyses",))  # doctest: +SKIP
    >>> pool.submit("job-1", "math:factorial", (5,), timeout_s=10)  # doctest: +SKIP
    >>> pool.submit("job-2", "time:sleep", (30,), timeout_s=1)  # doctest: +SKIP
    >>> sorted((o.job_id, o.state) for o in pool.poll(timeout=5))  # doctest: +SKIP
    [('job-1', 'succeeded'), ('job-2', 'timed_out')]
    >>> pool.close()  # doctest: +SKIP
    """

    n: int = 2
    preload: tuple[str, ...] = ("dtlive.alerts.analyses",)
    _ctx: Any = field(default=None, init=False)
    _results: Any = field(default=None, init=False)
    _workers: list = field(default_factory=list, init=False)
    _queue: deque = field(default_factory=deque, init=False)
    _started: list = field(default_factory=list, init=False)

    def __post_init__(self):
        self._ctx = mp.get_context("spawn")  # no fork of a process that holds Kafka client threads
        self._results = self._ctx.Queue()
        self._workers = [self._spawn() for _ in range(max(1, self.n))]

    def _spawn(self) -> _Worker:
        jobs = self._ctx.Queue()
        proc = self._ctx.Process(target=_worker_main, args=(jobs, self._results, self.preload), daemon=True,
                                 name="dtlive-analysis-worker")
        proc.start()
        return _Worker(proc, jobs)

    def submit(self, job_id: str, target: str, args: tuple = (), timeout_s: float = 60.0) -> None:
        """Queue a job; it starts as soon as a worker is free."""
        self._queue.append(_Job(job_id, target, tuple(args), float(timeout_s)))
        self._dispatch()

    def cancel(self, job_ids) -> list[Outcome]:
        """Cancel queued or running jobs (running ones: their worker is killed and replaced)."""
        ids = set(job_ids)
        out = [Outcome(j.job_id, "cancelled") for j in self._queue if j.job_id in ids]
        self._queue = deque(j for j in self._queue if j.job_id not in ids)
        for i, w in enumerate(self._workers):
            if w.job is not None and w.job.job_id in ids:
                out.append(Outcome(w.job.job_id, "cancelled", seconds=time.monotonic() - w.job.started))
                self._replace(i)
        self._dispatch()
        return out

    @property
    def busy(self) -> int:
        return sum(w.job is not None for w in self._workers) + len(self._queue)

    def poll(self, timeout: float = 0.0) -> list[Outcome]:
        """Outcomes that arrived (waiting up to ``timeout`` for the first), time-outs included."""
        out: list[Outcome] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                wait = max(0.0, deadline - time.monotonic())
                job_id, state, value, error, seconds = self._results.get(timeout=wait if not out else 0.0)
            except queue.Empty:
                break
            for w in self._workers:
                if w.job is not None and w.job.job_id == job_id:
                    w.job = None
                    out.append(Outcome(job_id, state, value, error, seconds))
                    break
        now = time.monotonic()
        for i, w in enumerate(self._workers):
            if w.job is not None and now - w.job.started > w.job.timeout_s:
                out.append(Outcome(w.job.job_id, "timed_out", error=f"over its {w.job.timeout_s:g} s limit",
                                   seconds=now - w.job.started))
                self._replace(i)
            elif not w.process.is_alive():
                if w.job is not None:
                    out.append(Outcome(w.job.job_id, "failed", error="worker process died",
                                       seconds=now - w.job.started))
                self._replace(i)
        self._dispatch()
        return out

    def _replace(self, i: int) -> None:
        w = self._workers[i]
        if w.process.is_alive():
            w.process.kill()
        w.process.join(5)
        self._workers[i] = self._spawn()

    def _dispatch(self) -> None:
        for w in self._workers:
            if w.job is None and self._queue:
                w.job = self._queue.popleft()
                w.job.started = time.monotonic()
                w.jobs.put((w.job.job_id, w.job.target, w.job.args))
                self._started.append(w.job.job_id)

    def take_started(self) -> list[str]:
        """Jobs handed to a worker since the last call."""
        started, self._started = self._started, []
        return started

    def close(self) -> None:
        """Stop every worker (running jobs are abandoned)."""
        for w in self._workers:
            if w.process.is_alive():
                w.jobs.put(None)
        for w in self._workers:
            w.process.join(2)
            if w.process.is_alive():
                w.process.kill()
        self._workers = []
