"""An unreachable ledger database: telling it from other errors, logging it once, retrying with backoff."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

RETRY_FIRST_S = 0.5  # backoff while the database is unreachable: 0.5 s, doubling ...
RETRY_MAX_S = 30.0  # ... up to 30 s between attempts

log = logging.getLogger("dtlive.storage.ledger")  # one logger for the whole ledger package


class LedgerUnavailable(RuntimeError):
    """The ledger database cannot be reached (server down, connection refused or lost, timeout).

    >>> is_unreachable(LedgerUnavailable("the ledger database is down")), is_unreachable(RuntimeError("bug"))
    (True, False)
    """


# ------------------------------------------------------------------------------ unreachable database

_SQLITE_TRANSIENT = re.compile(r"database is locked|unable to open database|disk i/o error", re.IGNORECASE)


def is_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be reached right now (a later attempt may work).

    Connection refused, lost or timed out (``OperationalError``, ``InterfaceError``, an invalidated
    connection, a pool timeout), a locked SQLite file, and :class:`LedgerUnavailable`; a constraint
    violation, a bad query or a missing SQLite table is not.

    >>> from sqlalchemy.exc import IntegrityError
    >>> is_unreachable(OperationalError("SELECT 1", {}, ConnectionRefusedError("refused")))
    True
    >>> is_unreachable(IntegrityError("INSERT", {}, ValueError("duplicate key"))), is_unreachable(ValueError())
    (False, False)
    """
    if isinstance(exc, LedgerUnavailable | PoolTimeoutError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    orig = exc.orig
    if type(orig).__module__ == "sqlite3":  # SQLite reports schema errors as OperationalError too
        return bool(_SQLITE_TRANSIENT.search(str(orig)))
    return True


def _reason(exc: BaseException) -> str:
    """The first line of what the driver said, without SQLAlchemy's boilerplate."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0].strip()


class Outage:
    """Logs one line when a database becomes unreachable and one when it is back, not one per attempt.

    >>> o = Outage("the ledger database sqlite://")
    >>> o.failed(OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))); o.down
    True
    >>> o.recovered(); o.down
    False
    """

    def __init__(self, name: str):
        self.name = name
        self._since: float | None = None
        self._attempts = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """True between a failed attempt and the next successful one."""
        return self._since is not None

    def message(self, exc: BaseException) -> str:
        """One line naming the database and what went wrong."""
        return f"{self.name} is unreachable: {_reason(exc)}"

    def failed(self, exc: BaseException) -> None:
        """An attempt failed because the database is unreachable."""
        with self._lock:
            self._attempts += 1
            first = self._since is None
            if first:
                self._since = time.monotonic()
        if first:
            log.warning("%s; retrying with backoff (%.1f s doubling to %.0f s)", self.message(exc), RETRY_FIRST_S,
                        RETRY_MAX_S)

    def recovered(self) -> None:
        """An attempt worked."""
        with self._lock:
            if self._since is None:
                return
            seconds, attempts = time.monotonic() - self._since, self._attempts
            self._since, self._attempts = None, 0
        log.warning("%s is reachable again after %.1f s (%d failed attempts)", self.name, seconds, attempts)


def retry_unreachable(
    fn: Callable[[], Any],
    *,
    outage: Outage | None = None,
    stop: Callable[[], bool] | None = None,
    give_up_s: float | None = None,
    first_s: float = RETRY_FIRST_S,
    max_s: float = RETRY_MAX_S,
    on_wait: Callable[[], None] | None = None,
) -> Any:
    """``fn()``, called again while the database is unreachable, waiting ``first_s`` doubling to ``max_s``.

    Other errors propagate at once. Raises :class:`LedgerUnavailable` when ``stop()`` turns true or
    ``give_up_s`` seconds have passed while the database is still away. ``on_wait()`` is called about
    ten times a second while waiting (a service's watchdog: it is waiting on purpose, not stuck).

    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
    ...     return "written"
    >>> retry_unreachable(flaky, first_s=0.01), len(calls)
    ('written', 3)
    """
    outage = outage or Outage("the ledger database")
    started, delay = time.monotonic(), first_s
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            outage.failed(exc)
            wake = time.monotonic() + delay
            if give_up_s is not None:
                wake = min(wake, started + give_up_s)
            while time.monotonic() < wake and not (stop is not None and stop()):
                if on_wait is not None:
                    on_wait()
                time.sleep(min(0.1, max(0.0, wake - time.monotonic())))
            if (stop is not None and stop()) or (give_up_s is not None and time.monotonic() >= started + give_up_s):
                raise LedgerUnavailable(outage.message(exc)) from exc
            delay = min(2 * delay, max_s)
        else:
            outage.recovered()
            return result
