"""Graceful stop on SIGINT/SIGTERM, with a deadline: a service never outlives a stop request by long.

A service's run loop checks a stop flag between steps, but a step can block inside a C library for much
longer (a Kafka transaction commit waits up to a minute for a broker that is gone). Python runs signal
handlers only between bytecodes of the main thread, so a handler alone cannot enforce a deadline.
:class:`StopOnSignal` therefore also registers a wakeup file descriptor: the C-level signal handler writes
the signal number there at once, a watcher thread reads it, asks the service to stop and arms a timer
that ends the process ``grace_s`` seconds later if it is still running. A second signal ends it at once.
Ending a service this way is safe: its results and offsets are committed in Kafka transactions, so an
interrupted transaction is aborted and re-done by the next start.

>>> import os, signal, time
>>> stopped = []
>>> with StopOnSignal(grace_s=30) as stop:
...     stop.on_stop(lambda: stopped.append(True))
...     os.kill(os.getpid(), signal.SIGTERM)
...     deadline = time.monotonic() + 5
...     while not stopped and time.monotonic() < deadline:
...         time.sleep(0.01)
>>> stopped, stop.requested
([True], 'SIGTERM')
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from dtlive.service.stacks import thread_stack

log = logging.getLogger(__name__)

#: Seconds a service may take to stop after SIGINT/SIGTERM before its process is ended.
STOP_GRACE_S = 5.0
#: Exit status of a process ended because it did not stop within the grace time.
EXIT_NOT_STOPPED = 3


class StopOnSignal:
    """Context manager: SIGINT/SIGTERM call the registered stop callbacks, then end the process after ``grace_s``.

    Use it from the main thread around a service's set-up and run; ``requested`` names the signal once one came.
    ``exit`` is what ends the process (``os._exit`` by default; tests pass their own).

    >>> import signal, threading
    >>> stopped = threading.Event()
    >>> with StopOnSignal(grace_s=30, exit=lambda code: print("ended", code)) as stop:
    ...     stop.on_stop(stopped.set)
    ...     signal.raise_signal(signal.SIGTERM)
    ...     _ = stopped.wait(5)
    >>> stop.requested, stopped.is_set()
    ('SIGTERM', True)
    """

    def __init__(self, grace_s: float = STOP_GRACE_S, exit: Callable[[int], None] = os._exit):
        self.grace_s = grace_s
        self.requested: str | None = None
        self._exit = exit
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._old: dict = {}
        self._old_fd: int | None = None
        self._pipe: tuple[int, int] | None = None
        self._timer: threading.Timer | None = None
        self._left = False  # the service has stopped: a signal read after that arms no timer

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when a stop is requested (at once if one was requested already)."""
        with self._lock:
            self._callbacks.append(callback)
            requested = self.requested
        if requested:
            callback()

    def __enter__(self) -> StopOnSignal:
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._pipe = (r, w)
        self._old = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
        self._old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(r,), daemon=True, name="stop-on-signal").start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._left = True
            if self._timer is not None:
                self._timer.cancel()
        signal.set_wakeup_fd(self._old_fd if self._old_fd is not None else -1)
        for s, h in self._old.items():
            signal.signal(s, h)
        if self._pipe is not None:
            os.close(self._pipe[1])  # the watcher sees end of file and returns

    def _watch(self, fd: int) -> None:
        try:
            while data := os.read(fd, 16):
                for signum in data:
                    if signum in (signal.SIGINT, signal.SIGTERM):
                        self._request(signal.Signals(signum).name)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _request(self, name: str) -> None:
        with self._lock:
            if self._left:
                return
            first = self.requested is None
            self.requested = self.requested or name
            callbacks = list(self._callbacks)
            if first:
                self._timer = threading.Timer(self.grace_s, self._overdue)
                self._timer.daemon = True
                self._timer.start()
        if not first:
            log.warning("%s again: ending now", name)
            self._exit(EXIT_NOT_STOPPED)
            return
        log.info("%s: stopping (ending the process if it has not stopped within %.0f s)", name, self.grace_s)
        for callback in callbacks:
            callback()

    def _overdue(self) -> None:
        log.error("did not stop within %.0f s of %s (a call into Kafka or the database did not return); ending now. "
                  "The main thread was at:\n%s", self.grace_s, self.requested,
                  thread_stack(threading.main_thread().ident))
        logging.shutdown()
        self._exit(EXIT_NOT_STOPPED)


class _Service(Protocol):
    """What :func:`serve` runs: a service that can be stopped from a signal handler, run, and closed."""

    def stop(self) -> None: ...

    def run(self, *args: Any, **kwargs: Any) -> object: ...

    def close(self) -> object: ...


_ServiceT = TypeVar("_ServiceT", bound=_Service)


def serve(make: Callable[[], _ServiceT], stopper: StopOnSignal | None = None, **kwargs) -> _ServiceT:
    """Make a service (processor, recorder, listener), run it until done or SIGINT/SIGTERM, then close it.

    Signals are handled from before the service is made (its set-up may wait on a broker), and a service that
    has not stopped :data:`STOP_GRACE_S` seconds after the signal is ended. What the set-up made is frozen out
    of garbage collection first (:func:`dtlive.service.heap.freeze_startup_objects`), and collections start less
    often (:func:`dtlive.service.heap.collect_less_often`). ``kwargs`` go to its ``run``; returns the service.

    >>> class Service:
    ...     def stop(self, *_): pass
    ...     def run(self, **kwargs): print("run", kwargs)
    ...     def close(self): print("closed")
    >>> _ = serve(Service, until_end=True)
    run {'until_end': True}
    closed
    """
    import contextlib
    import gc

    from dtlive.service.heap import collect_less_often, freeze_startup_objects

    with contextlib.nullcontext(stopper) if stopper is not None else StopOnSignal() as stop:
        service = make()
        stop.on_stop(service.stop)
        freeze_startup_objects()
        thresholds = collect_less_often()
        try:
            if not stop.requested:
                service.run(**kwargs)
        finally:
            service.close()
            gc.set_threshold(*thresholds)
    return service
