"""A watchdog for services: a stalled service says why and exits non-zero, so that its supervisor restarts it.

Two kinds of stall are caught. The run loop stops turning (a call into Kafka or the database never returns):
a thread notices that :meth:`Watchdog.beat` was not called for ``stuck_s`` seconds, logs it and ends the
process. Or the loop turns but input waits while nothing is consumed (a consumer that lost its fetches):
:meth:`Watchdog.check` raises :class:`Stalled` once that lasted ``stall_s`` seconds. Exactly-once state lives
in Kafka transactions and idempotent ledger writes, so a restart resumes where the service was.

>>> dog = Watchdog("processor", stall_s=60)
>>> dog.check(stalled_s=10, why="5 messages waiting")
>>> try:
...     dog.check(stalled_s=61, why="5 messages waiting")
... except Stalled as exc:
...     print(exc)
processor stalled: 5 messages waiting, nothing processed for 61 s; exiting so that it is restarted
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from dtlive.service.stacks import thread_stack

log = logging.getLogger(__name__)

#: Exit status of a service ended by its watchdog.
EXIT_STALLED = 4


class Stalled(SystemExit):
    """Input waited while nothing was processed for longer than the watchdog allows.

    >>> try:
    ...     Watchdog("recorder", stall_s=10).check(12.0, "results waiting")
    ... except Stalled as e:
    ...     print(e.code, e)
    4 recorder stalled: results waiting, nothing processed for 12 s; exiting so that it is restarted
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.code = EXIT_STALLED
        self.text = text

    def __str__(self) -> str:
        return self.text


class Watchdog:
    """Ends a stalled service. ``stall_s``: input waiting, nothing processed (0: never); ``stuck_s``: the loop
    did not turn (default three times ``stall_s``, at least 120 s; the thread starts with :meth:`start`).

    >>> dog = Watchdog("processor", stall_s=60)
    >>> dog.stuck_s, dog.check(30.0, "input waiting")  # 30 s is still allowed
    (180, None)
    >>> try:
    ...     dog.check(61.0, "input waiting")
    ... except Stalled as e:
    ...     print(e.code, str(e).split(";")[0])
    4 processor stalled: input waiting, nothing processed for 61 s
    >>> dog.close()
    """

    def __init__(self, service: str, stall_s: float = 60.0, stuck_s: float | None = None,
                 exit: Callable[[int], None] = os._exit):
        self.service = service
        self.stall_s = stall_s
        self.stuck_s = stuck_s if stuck_s is not None else max(3 * stall_s, 120.0)
        self.last_beat = time.monotonic()
        self._exit = exit
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: int | None = None  # the thread whose loop beats (the one that called start)

    def start(self) -> Watchdog:
        self._loop = threading.get_ident()
        if self.stall_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._watch, daemon=True, name=f"{self.service}-watchdog")
            self._thread.start()
        return self

    def beat(self) -> None:
        """The run loop turned."""
        self.last_beat = time.monotonic()

    def check(self, stalled_s: float, why: str) -> None:
        """Raise :class:`Stalled` when input has waited ``stalled_s`` seconds with nothing processed, too long."""
        if self.stall_s > 0 and stalled_s > self.stall_s and not self._done.is_set():
            text = f"{self.service} stalled: {why}, nothing processed for {stalled_s:.0f} s; exiting so that it " \
                   "is restarted"
            log.error("%s", text)
            raise Stalled(text)

    def close(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(1.0):
            quiet = time.monotonic() - self.last_beat
            if quiet > self.stuck_s:
                log.critical("%s: its run loop has not turned for %.0f s (a call into Kafka or the database did not "
                             "return); exiting so that it is restarted. It was at:\n%s", self.service, quiet,
                             thread_stack(self._loop))
                logging.shutdown()
                self._exit(EXIT_STALLED)
                return
