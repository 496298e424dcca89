"""Services and an unreachable database: :class:`RetryingLedger` waits outages out, :class:`RunKeeper` keeps a run."""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dtlive.storage.ledger.api import Ledger
from dtlive.storage.ledger.outage import LedgerUnavailable, is_unreachable, retry_unreachable
from dtlive.storage.ledger.queries import HEARTBEAT_S

log = logging.getLogger("dtlive.storage.ledger")  # one logger for the whole ledger package


class RetryingLedger:
    """A :class:`Ledger` whose every call waits out database outages instead of failing (for services).

    Each call is retried with backoff (:func:`retry_unreachable`) while the database is unreachable,
    so a service blocks where it is and goes on when the database is back: nothing it had to write
    is skipped and nothing is written twice (each call is one transaction). When ``stop()`` turns
    true during an outage the waiting call raises :class:`LedgerUnavailable`; ``on_wait()`` is called
    while it waits (see :func:`retry_unreachable`). Attributes that are not methods (``url``,
    ``engine``, ``outage``) are the wrapped ledger's.

    A write whose COMMIT was sent just as the connection died may have been applied; retrying it is
    harmless for the idempotent calls (``record_windows``, ``stop_run``, ``tag``) and appends a
    repeated row for the others (``append_state``, ``add_period``).

    >>> led = RetryingLedger(Ledger("sqlite://"))
    >>> led.append_state("task-1", "queued") > 0, led.current_state("task-1")
    (True, 'queued')
    """

    _AS_IS = frozenset({"close", "session"})

    def __init__(self, ledger: Ledger | RetryingLedger, stop: Callable[[], bool] | None = None,
                 on_wait: Callable[[], None] | None = None):
        self.ledger: Ledger = ledger.ledger if isinstance(ledger, RetryingLedger) else ledger
        self.stop = stop
        self.on_wait = on_wait

    def __repr__(self) -> str:
        return f"RetryingLedger({self.ledger!r})"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.ledger, name)
        if name.startswith("_") or name in self._AS_IS or not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            return retry_unreachable(lambda: attr(*args, **kwargs), outage=self.ledger.outage, stop=self.stop,
                                     on_wait=self.on_wait)

        return call


class RunKeeper:
    """A service's processing run in the ledger, kept without ever making the service wait on the database.

    The run is started at once when the database answers; otherwise a background thread retries
    with backoff until it does. The thread stamps a heartbeat every ``heartbeat_s`` seconds;
    :meth:`stop` records the end, waiting at most ``timeout_s`` for an unreachable database (the
    run then stays ``running`` and is marked ``died`` once its process is gone). ``start_kwargs``
    go to :meth:`Ledger.start_run`.

    >>> led = Ledger("sqlite://")
    >>> keeper = RunKeeper(led, "run-1", heartbeat_s=0.05, config={"window_s": 2.0})
    >>> led.run("run-1")["status"]
    'running'
    >>> keeper.stop("finished"), led.run("run-1")["status"]
    (True, 'finished')
    """

    def __init__(self, ledger: Ledger | RetryingLedger, run_id: str, *, heartbeat_s: float = HEARTBEAT_S,
                 **start_kwargs: Any):
        self.ledger: Ledger = ledger.ledger if isinstance(ledger, RetryingLedger) else ledger
        self.run_id = run_id
        self.heartbeat_s = heartbeat_s
        self.started = False
        self.stopped = False
        self._start_kwargs = dict(start_kwargs, run_id=run_id)
        self._status = "finished"
        self._deadline = float("inf")  # monotonic time after which an unreachable database is given up on
        self._stopping = threading.Event()
        try:
            self._start()
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            self.ledger.outage.failed(exc)
        self._thread = threading.Thread(target=self._work, name=f"ledger-run-{run_id}", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        self.ledger.ensure_upgraded()
        try:
            self.ledger.start_run(**self._start_kwargs)
        except ValueError:  # already there: fine if an earlier attempt, whose answer was lost, wrote it
            run = self.ledger.run(self.run_id)
            if (run["host"], run["pid"], run["status"]) != (socket.gethostname(), os.getpid(), "running"):
                raise
        self.started = True

    def _retry(self, fn: Callable[[], Any]) -> bool:
        try:
            retry_unreachable(fn, outage=self.ledger.outage, stop=lambda: time.monotonic() > self._deadline)
        except LedgerUnavailable as exc:
            log.error("run %s: %s; giving up on recording it", self.run_id, exc)
            return False
        return True

    def _work(self) -> None:
        try:
            if not self.started and not self._retry(self._start):
                return
            while not self._stopping.wait(self.heartbeat_s):
                try:
                    self.ledger.heartbeat(self.run_id)
                    self.ledger.outage.recovered()
                except Exception as exc:
                    if not is_unreachable(exc):
                        raise
                    self.ledger.outage.failed(exc)
            self.stopped = self._retry(lambda: self.ledger.stop_run(self.run_id, status=self._status))
        except Exception:  # never let bookkeeping kill its service; say why
            log.exception("run %s: recording it in the ledger failed", self.run_id)

    def stop(self, status: str = "finished", timeout_s: float = 10.0) -> bool:
        """Record the run's end with ``status``; wait at most ``timeout_s``; True once it is recorded."""
        self._status = status
        self._deadline = time.monotonic() + timeout_s
        self._stopping.set()
        self._thread.join(timeout_s + 1.0)
        return self.stopped


class Outbox:
    """Ledger writes done in order on a background thread, waiting out database outages, so that the caller
    never waits for the database (what it sends elsewhere first is not held up by an outage).

    ``write(ledger, item)`` is called for each :meth:`put` item, retried while the database is unreachable
    (:func:`retry_unreachable`); another error is logged and the item dropped. :meth:`close` waits at most
    ``timeout_s`` for what is queued. With a ``spool`` file, what the database was still away for at
    :meth:`close` is kept there as JSON lines and written first by the next outbox on the same file (a service
    stopped during an outage loses nothing; items must be JSON: lists come back for tuples). Items still queued
    when the process is killed are lost: callers make them again (idempotently) from their own input.

    >>> led = Ledger("sqlite://")
    >>> box = Outbox(led, lambda ledger, state: ledger.append_state("task-1", state))
    >>> box.put("queued"); box.put("running"); box.close()
    True
    >>> [s["state"] for s in led.task_history("task-1")], box.written
    (['queued', 'running'], 2)
    """

    def __init__(self, ledger: Ledger | RetryingLedger, write: Callable[[Ledger, Any], Any], name: str = "outbox",
                 spool: str | os.PathLike | None = None):
        import queue

        self.ledger: Ledger = ledger.ledger if isinstance(ledger, RetryingLedger) else ledger
        self.write = write
        self.written = 0
        self.failed = 0
        self.spool = Path(spool) if spool is not None else None
        self._left: list[Any] = []  # given up on at close while the database was away: spooled
        self._queue: queue.Queue = queue.Queue()
        self._closing = threading.Event()
        self._deadline = float("inf")
        spooled = self._unspool()
        self._unspooled = self._spooled_left = len(spooled)
        for item in spooled:
            self._queue.put(item)
        self._thread = threading.Thread(target=self._work, name=f"ledger-{name}", daemon=True)
        self._thread.start()

    def _unspool(self) -> list[Any]:
        """The items an earlier outbox left in the spool file (removed once they are written)."""
        if self.spool is None or not self.spool.exists():
            return []
        items = []
        for n, line in enumerate(self.spool.read_text().splitlines(), 1):
            try:
                items.append(json.loads(line))
            except ValueError:
                log.error("%s line %d is no JSON; left out", self.spool, n)
        if items:
            log.warning("%s: %d writes a stopped service left for the ledger database, written first", self.spool,
                        len(items))
        else:
            self.spool.unlink()
        return items

    @property
    def waiting(self) -> int:
        """Items not written yet."""
        return self._queue.unfinished_tasks

    @property
    def unspooled(self) -> bool:
        """True when this outbox began with items an earlier one left in its spool file."""
        return self._unspooled > 0

    def put(self, item: Any) -> None:
        """Queue ``item`` for writing (returns at once)."""
        self._queue.put(item)

    def drain(self) -> None:
        """Wait until everything queued is written (while the database is away: until it is back)."""
        self._queue.join()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _CLOSE:
                    return
                retry_unreachable(functools.partial(self.write, self.ledger, item), outage=self.ledger.outage,
                                  stop=lambda: time.monotonic() > self._deadline)
                self.written += 1
                self._spooled_done()
            except LedgerUnavailable as exc:  # closing while the database is still away
                self.failed += 1
                self._left.append(item)
                if self.spool is None:
                    log.warning("%s: a write left out: %s", self._thread.name, exc)
            except Exception:  # noqa: BLE001 - bookkeeping never kills its service; say why
                self.failed += 1
                log.exception("a ledger write of the %s failed; left out", self._thread.name)
                self._spooled_done()
            finally:
                self._queue.task_done()

    def close(self, timeout_s: float = 10.0) -> bool:
        """Write what is queued, waiting at most ``timeout_s`` (for an unreachable database); True when all was."""
        self._deadline = time.monotonic() + timeout_s
        self._queue.put(_CLOSE)
        self._thread.join(timeout_s + 0.2)
        if self._left and self.spool is not None and not self._thread.is_alive():
            self._write_spool()
        return not self._thread.is_alive() and self.failed == 0

    def _spooled_done(self) -> None:
        """One item of the spool file written: the file goes once all of them are."""
        if self._spooled_left > 0:
            self._spooled_left -= 1
            if self._spooled_left == 0 and self.spool is not None:
                self.spool.unlink(missing_ok=True)

    def _write_spool(self) -> None:
        assert self.spool is not None
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.spool.with_name(f".{self.spool.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(item, default=str) + "\n" for item in self._left))
        os.replace(tmp, self.spool)
        log.warning("%s: %d writes kept in %s for the next start (the ledger database is still away)",
                    self._thread.name, len(self._left), self.spool)


_CLOSE = object()
