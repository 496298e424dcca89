"""A service's processing run recorded in the ledger by a child process, so that the service itself never pays
for it: opening the ledger (importing SQLAlchemy and the ledger's models, migrating a new database) takes 0.5-1 s of
CPU, and in a thread of the service it takes turns with the processing for the interpreter lock.

The parent (:class:`ChildRun`) starts ``python -m dtlive.storage.run_record``, writes the run's start on the
child's standard input as one JSON line, and later a stop line; the child (:func:`main`) keeps the run with a
:class:`dtlive.storage.ledger.RunKeeper` (start, heartbeats, end; database outages waited out) and answers the
stop with one JSON line. The run's host and pid are the parent's, so that a run whose service was killed is
shown as ``died``. When the parent goes away without a stop (kill -9), the child's standard input ends and it
exits without recording an end. The child runs at a lower priority (:data:`NICE`) and ignores SIGINT and
SIGTERM (a terminal's Ctrl-C reaches the whole process group): its parent stops it. Should the child be gone at
the stop, the parent records the end itself.

The ledger is the child's default (``DTLIVE_DB`` of the environment it inherits), opened as
:meth:`dtlive.storage.ledger.Ledger.for_service` does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("dtlive.storage.ledger")

NICE = 10  # the child's niceness: on a busy machine it waits for the service and the broker, not they for it
IN_CHILD = "child process"
"""What a service is given as its ledger to have its run recorded by a :class:`ChildRun`."""


def start_fields(config: Any = None, **start_kwargs: Any) -> dict:
    """The keyword arguments of :meth:`Ledger.start_run` as JSON: a :class:`dtlive.config.Config` becomes its dict,
    hash and processor (as ``start_run`` takes them from a Config); the host and pid are this process's.

    >>> from dtlive.config import load_config
    >>> fields = start_fields(load_config({"group_id": "p1"}, env={}), kind="processing", inputs=[])
    >>> fields["processor"], len(fields["config_hash"]) > 6, fields["pid"] == os.getpid()
    ('p1', True, True)
    """
    if hasattr(config, "as_dict") and hasattr(config, "config_hash"):
        start_kwargs.setdefault("config_hash", config.config_hash)
        start_kwargs.setdefault("processor", config.group_id)
        start_kwargs.setdefault("inputs", [{"topic": config.hits_topic}])
        config = config.as_dict()
    fields = {"config": config, "host": socket.gethostname(), "pid": os.getpid(), **start_kwargs}
    return json.loads(json.dumps(fields, default=str))


class ChildRun:
    """Run ``run_id`` kept in the ledger by a child process (see the module doc); :meth:`stop` records its end.

    ``start_kwargs`` go to :meth:`Ledger.start_run` (through :func:`start_fields`); ``env``: the child's
    environment (default: this process's). After :meth:`stop`, ``cpu_s`` holds the CPU seconds the child used
    (None if it did not say).

    >>> import os, tempfile
    >>> db = f"sqlite:///{tempfile.mkdtemp()}/ledger.sqlite"
    >>> run = ChildRun("run-1", env={**os.environ, "DTLIVE_DB": db}, config={"window_s": 2.0}, processor="demo")
    >>> run.stop("finished"), run.cpu_s > 0
    (True, True)
    >>> from dtlive.storage.ledger import Ledger
    >>> shown = Ledger(db).run("run-1")
    >>> shown["status"], shown["pid"] == os.getpid(), shown["processor"]
    ('finished', True, 'demo')
    """

    def __init__(self, run_id: str, env: Mapping[str, str] | None = None, **start_kwargs: Any):
        self.run_id = run_id
        self._fields = start_fields(**start_kwargs)
        self._db = (os.environ if env is None else env).get("DTLIVE_DB") or None  # the child's ledger
        self._lock = threading.Lock()
        self.child: subprocess.Popen | None = None
        self.cpu_s: float | None = None
        try:
            self.child = subprocess.Popen([sys.executable, "-m", "dtlive.storage.run_record"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, env=dict(env) if env else None)
            self._send({"run_id": run_id, "start": self._fields, "log_level": logging.getLogger().getEffectiveLevel()})
        except (OSError, ValueError) as exc:
            log.error("run %s: the process that records it could not be started (%s); it is recorded at its end",
                      run_id, exc)

    def _send(self, message: dict) -> None:
        assert self.child is not None and self.child.stdin is not None
        self.child.stdin.write(json.dumps(message) + "\n")
        self.child.stdin.flush()

    def stop(self, status: str = "finished", timeout_s: float = 10.0) -> bool:
        """Record the run's end with ``status``; wait at most about ``timeout_s``; True once it is recorded."""
        with self._lock:
            answer = self._stop_child(status, timeout_s)
            if answer is None:  # no child, or it died: record the end here
                return self._stop_here(status, timeout_s)
            return answer

    def _stop_child(self, status: str, timeout_s: float) -> bool | None:
        child = self.child
        if child is None or child.poll() is not None:
            return None
        try:
            self._send({"stop": status, "timeout_s": timeout_s})
            out, _ = child.communicate(timeout=timeout_s + 15.0)  # the child's start may still wait on the database
        except (OSError, ValueError):
            return None
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            log.error("run %s: the process recording it did not answer within %.0f s", self.run_id, timeout_s + 15.0)
            return False
        lines = out.strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else None
        except ValueError:
            return None
        if not isinstance(answer, dict) or "stopped" not in answer:
            return None
        cpu_s = answer.get("cpu_s")
        self.cpu_s = float(cpu_s) if isinstance(cpu_s, int | float) else None
        return bool(answer["stopped"])

    def _stop_here(self, status: str, timeout_s: float) -> bool:
        try:
            from dtlive.storage.ledger import Ledger, RunKeeper

            keeper = RunKeeper(Ledger.for_service(self._db), self.run_id, heartbeat_s=3600.0, **self._fields)
            return keeper.stop(status, timeout_s=timeout_s)
        except Exception:  # never let bookkeeping kill its service; say why
            log.exception("run %s: recording its end in the ledger failed", self.run_id)
            return False


def main() -> int:
    """The child: keep the run of the first line on stdin until a stop line (answered) or the end of stdin.

    >>> import subprocess, sys
    >>> subprocess.run([sys.executable, "-m", "dtlive.storage.run_record"], input="", text=True).returncode  # no run
    0
    """
    with contextlib.suppress(OSError):  # bookkeeping: the CPU its imports take (~1 s) is what the service leaves
        os.nice(NICE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops this process; a group's Ctrl-C does not
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    first = sys.stdin.readline()
    if not first:
        return 0
    order = json.loads(first)
    # its log lines go where the parent's go (the inherited stderr), at the parent's level and in the CLI's format
    logging.basicConfig(level=order.get("log_level", logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keeper = None
    try:
        from dtlive.storage.ledger import Ledger, RunKeeper

        keeper = RunKeeper(Ledger.for_service(), order["run_id"], **order["start"])
    except Exception:  # never let bookkeeping kill its service; say why
        log.exception("run %s: the ledger could not be opened; the run is not recorded", order["run_id"])
    line = sys.stdin.readline()
    if not line:  # the parent is gone without a stop (killed): the run is left for mark_dead_runs
        os._exit(0)  # the keeper's thread would stamp more heartbeats
    stop = json.loads(line)
    stopped = keeper is not None and keeper.stop(stop["stop"], timeout_s=float(stop["timeout_s"]))
    used = resource.getrusage(resource.RUSAGE_SELF)  # what the bookkeeping cost, for its service to report
    print(json.dumps({"stopped": stopped, "cpu_s": round(used.ru_utime + used.ru_stime, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
