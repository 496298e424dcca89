"""The :class:`Ledger` API: construction, sessions and transactions, processing runs, windows.

Its other sections live in mixins it inherits: data-quality periods, annotations and tags and detector
runs in :mod:`~dtlive.storage.ledger.periods`, the task state history in :mod:`~dtlive.storage.ledger.tasks`,
alarm events in :mod:`~dtlive.storage.ledger.alarms`, judged lumi blocks and certification overrides in
:mod:`~dtlive.storage.ledger.certification`.

Just over 500 lines: runs and windows share the session and transaction handling defined here.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from dtlive import __version__
from dtlive.service.processes import pid_alive
from dtlive.storage.ledger.alarms import AlarmsMixin
from dtlive.storage.ledger.certification import CertificationMixin
from dtlive.storage.ledger.engine import default_url, make_engine, normalize_url, upgrade
from dtlive.storage.ledger.models import (
    UNKNOWN_PROCESSOR,
    ProcessingRun,
    WindowInput,
    WindowRecord,
    _no_bulk_task_changes,
    _now,
)
from dtlive.storage.ledger.outage import Outage, is_unreachable
from dtlive.storage.ledger.periods import PeriodsMixin
from dtlive.storage.ledger.queries import run_liveness
from dtlive.storage.ledger.tasks import TasksMixin
from dtlive.storage.ledger.values import (
    _UNSET,
    TimeLike,
    _chunks,
    _jsonable,
    _opt_utc,
    _redact,
    merge_offset_ranges,
    source_git_commit,
    to_utc,
)

log = logging.getLogger("dtlive.storage.ledger")  # one logger for the whole ledger package

class Ledger(PeriodsMixin, TasksMixin, AlarmsMixin, CertificationMixin):
    """The bookkeeping database. ``Ledger()`` opens ``DTLIVE_DB`` or the default SQLite file and migrates it.

    Every query returns plain dicts (``pandas.DataFrame(ledger.windows())`` works); times are
    timezone-aware UTC datetimes, and every time argument also takes UNIX seconds or ISO strings.

    >>> import tempfile
    >>> from dtlive.config import load_config
    >>> ledger = Ledger(f"sqlite:///{tempfile.mkdtemp()}/ledger.sqlite")
    >>> run = ledger.start_run("processing", load_config({}, env={}), run_id="run-1")
    >>> ledger.stop_run("run-1")
    >>> [(r["run_id"], r["status"]) for r in ledger.runs()]
    [('run-1', 'finished')]
    """

    def __init__(self, url: str | URL | None = None, *, migrate: bool = True, busy_timeout_s: float = 30.0):
        """Open the ledger at ``url`` (default :func:`default_url`); ``migrate`` runs ``alembic upgrade head``."""
        self.url = normalize_url(url if url is not None else default_url())
        self.engine = make_engine(self.url, busy_timeout_s)
        self._write_engine = self.engine.execution_options(dtlive_write=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "do_orm_execute", _no_bulk_task_changes)
        self.outage = Outage(f"the ledger database {self.url.render_as_string(hide_password=True)}")
        self.upgrade_pending = False  # opened by for_service while the database was unreachable
        if migrate:
            upgrade(self.engine)
            self.mark_dead_runs()  # a service starts: runs of this host whose process is gone died

    @classmethod
    def for_service(cls, url: str | URL | None = None) -> Ledger:
        """Open the ledger for a service that must start even while the database is unreachable.

        Then the ledger is returned unmigrated (``upgrade_pending``; one log line says so) and
        :meth:`ensure_upgraded` (which :class:`RunKeeper` calls) migrates it once the database answers.
        """
        try:
            return cls(url)
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            ledger = cls(url, migrate=False)
            ledger.upgrade_pending = True
            ledger.outage.failed(exc)
            return ledger

    def ensure_upgraded(self) -> None:
        """Migrate now if the ledger was opened while its database was unreachable (see :meth:`for_service`)."""
        if self.upgrade_pending:
            upgrade(self.engine)
            self.upgrade_pending = False
            self.mark_dead_runs()

    def __repr__(self) -> str:
        return f"Ledger({self.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """An ORM session in a transaction (committed on success) for queries the API does not cover.

        Give ``write=True`` when it will write: on SQLite it then takes the write lock up front.
        """
        with self._tx(write) as s:
            yield s

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[Session]:
        with self._sessions(bind=self._write_engine if write else self.engine) as s, s.begin():
            yield s

    def _retry(self, fn, attempts: int = 3):
        """Run ``fn(session)`` in a write transaction, again if a concurrent writer won a unique-key race."""
        for attempt in range(attempts):
            try:
                with self._tx() as s:
                    return fn(s)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise

    # ---------------------------------------------------------------------------- processing runs

    def start_run(
        self,
        kind: str = "processing",
        config: Mapping | Any | None = None,
        config_hash: str | None = None,
        inputs: list[dict] | None = None,
        run_id: str | None = None,
        *,
        processor: str | None = None,
        host: str | None = None,
        pid: int | None = _UNSET,
        dtlive_version: str | None = None,
        git_commit: str | None = _UNSET,
        at: TimeLike | None = None,
    ) -> str:
        """Record the start of a processing run and return its id (a new uuid unless ``run_id`` is given).

        ``config`` is a dict or a :class:`dtlive.config.Config` (then ``config_hash``, ``processor`` and
        ``inputs`` default from it); secrets in it are masked. Host, dtlive version and the git commit
        of the source checkout are filled in. A run only seen in results so far gets completed.
        ``pid`` (default: this process, when ``host`` is this host) lets a run whose process is gone be
        shown as ``died`` (see :meth:`mark_dead_runs`).
        """
        if hasattr(config, "as_dict") and hasattr(config, "config_hash"):  # a dtlive Config
            cfg: Any = config
            config = cfg.as_dict()
            config_hash = config_hash or cfg.config_hash
            processor = processor or cfg.group_id
            inputs = inputs if inputs is not None else [{"topic": cfg.hits_topic}]
        values = dict(
            kind=kind,
            status="running",
            processor=processor,
            config=_jsonable(_redact(config)),
            config_hash=config_hash,
            inputs=_jsonable(inputs),
            host=host or socket.gethostname(),
            pid=(os.getpid() if host in (None, socket.gethostname()) else None) if pid is _UNSET else pid,
            dtlive_version=dtlive_version or __version__,
            git_commit=source_git_commit() if git_commit is _UNSET else git_commit,
            started_at=to_utc(at) if at is not None else _now(),
            stopped_at=None,
        )
        values["heartbeat_at"] = values["started_at"]
        run_id = run_id or uuid.uuid4().hex[:12]

        def write(s: Session) -> str:
            run = s.get(ProcessingRun, run_id)
            if run is None:
                s.add(ProcessingRun(run_id=run_id, **values))
            elif run.status == "observed":
                for k, v in values.items():
                    if v is not None or k == "stopped_at":
                        setattr(run, k, v)
            else:
                raise ValueError(f"run {run_id!r} already exists (status {run.status})")
            return run_id

        return self._retry(write)

    def stop_run(self, run_id: str, status: str = "finished", *, at: TimeLike | None = None) -> None:
        """Record the end of a run (``status``: finished, failed, killed...); repeating the same stop is a no-op."""
        with self._tx() as s:
            run = s.get(ProcessingRun, run_id)
            if run is None:
                raise KeyError(f"no run {run_id!r}")
            if run.stopped_at is not None:
                if run.status != status:
                    raise ValueError(f"run {run_id!r} already stopped with status {run.status!r}")
                return
            run.status, run.stopped_at = status, to_utc(at) if at is not None else _now()

    def heartbeat(self, run_id: str, *, at: TimeLike | None = None) -> None:
        """Stamp a running run as alive now (or ``at``); a stopped run is left alone."""
        with self._tx() as s:
            s.execute(sa.update(ProcessingRun)
                      .where(ProcessingRun.run_id == run_id, ProcessingRun.status == "running")
                      .values(heartbeat_at=to_utc(at) if at is not None else _now()))

    def mark_dead_runs(self) -> list[str]:
        """Mark ``died`` the runs still ``running`` on this host whose process is gone; returns their ids.

        Their ``stopped_at`` is the last heartbeat (the last time the process was known alive).
        Done whenever a service opens the ledger and when runs are listed.
        """
        host = socket.gethostname()
        q = sa.select(ProcessingRun.run_id, ProcessingRun.pid).where(
            ProcessingRun.status == "running", ProcessingRun.host == host, ProcessingRun.pid.is_not(None))
        with self._tx(write=False) as s:
            dead = [run_id for run_id, pid in s.execute(q) if pid is not None and not pid_alive(int(pid))]
        if not dead:
            return []
        with self._tx() as s:
            for run in s.scalars(sa.select(ProcessingRun).where(ProcessingRun.run_id.in_(dead),
                                                                ProcessingRun.status == "running")):
                run.status, run.stopped_at = "died", run.heartbeat_at or run.started_at
        log.warning("runs whose process on %s is gone, marked died: %s", host, ", ".join(dead))
        return dead

    def run(self, run_id: str) -> dict:
        """One processing run as a dict (KeyError if unknown); its ``status`` as :meth:`runs` shows it."""
        self.mark_dead_runs()
        with self._tx(write=False) as s:
            run = s.get(ProcessingRun, run_id)
            if run is None:
                raise KeyError(f"no run {run_id!r}")
            return self._shown(self._run_dict(run, self._tags_for(s, "run", [run_id])))

    def runs(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        processor: str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> list[dict]:
        """Processing runs, oldest first, optionally filtered (``start``/``end``: runs overlapping that range).

        Runs of this host whose process is gone are marked ``died`` first; a ``running`` run on another
        host without a heartbeat for a while is shown as ``unknown`` (see :func:`run_liveness`).
        """
        self.mark_dead_runs()
        q = sa.select(ProcessingRun).order_by(ProcessingRun.started_at, ProcessingRun.run_id)
        for col, value in ((ProcessingRun.kind, kind), (ProcessingRun.status, status),
                           (ProcessingRun.processor, processor)):
            if value is not None:
                q = q.where(col == value)
        if end is not None:
            q = q.where(ProcessingRun.started_at < to_utc(end))
        if start is not None:
            q = q.where(sa.or_(ProcessingRun.stopped_at.is_(None), ProcessingRun.stopped_at > to_utc(start)))
        with self._tx(write=False) as s:
            runs = s.scalars(q).all()
            tags = self._tags_for(s, "run", [r.run_id for r in runs])
        return [self._shown(self._run_dict(r, tags)) for r in runs]

    @staticmethod
    def _shown(run: dict) -> dict:
        run["status"] = run_liveness(run, host=socket.gethostname(), now=_now())
        return run

    @staticmethod
    def _run_dict(r: ProcessingRun, tags: Mapping[str, list[str]]) -> dict:
        return {
            "run_id": r.run_id, "kind": r.kind, "status": r.status, "processor": r.processor,
            "config_hash": r.config_hash, "config": r.config, "inputs": r.inputs, "host": r.host,
            "pid": r.pid, "dtlive_version": r.dtlive_version, "git_commit": r.git_commit,
            "started_at": r.started_at, "stopped_at": r.stopped_at, "heartbeat_at": r.heartbeat_at,
            "tags": tags.get(r.run_id, []),
        }  # fmt: skip

    # ------------------------------------------------------------------------------------ windows

    def record_window(self, msg: dict | bytes | str, topic: str, partition: int, offset: int) -> bool:
        """Record one ``dtlive.monitor/1`` result read at ``topic``/``partition``/``offset``.

        Idempotent on (processor, window id): returns False when the window was already recorded.
        """
        return self.record_windows([(msg, topic, partition, offset)]) == 1

    def record_windows(self, records: Iterable[tuple[dict | bytes | str, str, int, int]],
                       cluster: str | None = None) -> int:
        """Record many results ``(msg, topic, partition, offset)`` in one transaction; returns how many were new.

        Idempotent on (processor, processing run, window id). ``cluster``: the cluster id of the broker the
        results were read from (where their offsets belong).
        """
        from dtlive.core.messages import decode_message

        rows: dict[tuple[str, str | None, int], tuple[dict, list[dict]]] = {}
        for msg, topic, partition, offset in records:
            row, inputs = _window_row(decode_message(msg), topic, partition, offset)
            row["result_cluster"] = cluster
            rows.setdefault((row["processor"], row["run_id"], row["window_id"]), (row, inputs))

        def write(s: Session) -> int:
            known: set[tuple[str, str | None, int]] = set()
            by_processor: dict[str, list[int]] = {}
            for proc, _, wid in rows:
                by_processor.setdefault(proc, []).append(wid)
            for proc, wids in by_processor.items():
                for chunk in _chunks(sorted(set(wids))):
                    q = sa.select(WindowRecord.run_id, WindowRecord.window_id).where(
                        WindowRecord.processor == proc, WindowRecord.window_id.in_(chunk)
                    )
                    known.update((proc, run, w) for run, w in s.execute(q))
            new = [rows[k] for k in rows if k not in known]
            self._ensure_runs(s, [row for row, _ in new])
            s.add_all(WindowRecord(**row, inputs=[WindowInput(**i) for i in inputs]) for row, inputs in new)
            return len(new)

        return self._retry(write) if rows else 0

    def result_positions(self, topic: str, cluster: str | None = None) -> dict[int, int]:
        """Per partition of a results topic, the offset after the last recorded result (where to resume).

        ``cluster``: only results read from the broker with this cluster id count (offsets of a broker that
        was replaced mean nothing on its successor).
        """
        with self._tx(write=False) as s:
            q = (sa.select(WindowRecord.result_partition, sa.func.max(WindowRecord.result_offset))
                 .where(WindowRecord.result_topic == topic).group_by(WindowRecord.result_partition))
            if cluster is not None:
                q = q.where(WindowRecord.result_cluster == cluster)
            return {int(p): int(o) + 1 for p, o in s.execute(q)}

    @staticmethod
    def _ensure_runs(s: Session, rows: list[dict]) -> None:
        """Runs only seen in results get a stub row (status "observed") so windows always point to a run."""
        first: dict[str, dict] = {}
        for row in rows:
            if row["run_id"] and row["run_id"] not in first:
                first[row["run_id"]] = row
        if not first:
            return
        have = set(s.scalars(sa.select(ProcessingRun.run_id).where(ProcessingRun.run_id.in_(list(first)))))
        for run_id, row in first.items():
            if run_id not in have:
                s.add(ProcessingRun(
                    run_id=run_id, kind="processing", status="observed", processor=row["processor"],
                    config_hash=row["config_hash"], host=row["host"], dtlive_version=row["dtlive_version"],
                    started_at=row["start_time"] or _now(),
                ))  # fmt: skip
        s.flush()

    def windows(
        self,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        run_id: str | None = None,
        *,
        processor: str | None = None,
        window_id: int | None = None,
    ) -> list[dict]:
        """Recorded windows overlapping [start, end), oldest first, with their input ranges."""
        with self._tx(write=False) as s:
            return [self._window_dict(w) for w in self._select_windows(s, start, end, run_id, processor, window_id)]

    @staticmethod
    def _select_windows(s, start, end, run_id, processor, window_id) -> Sequence[WindowRecord]:
        q = sa.select(WindowRecord).options(selectinload(WindowRecord.inputs))
        q = q.order_by(WindowRecord.start_time.is_(None), WindowRecord.start_time, WindowRecord.processor,
                       WindowRecord.window_id)
        if start is not None:
            q = q.where(WindowRecord.end_time > to_utc(start))
        if end is not None:
            q = q.where(WindowRecord.start_time < to_utc(end))
        for col, value in ((WindowRecord.run_id, run_id), (WindowRecord.processor, processor),
                           (WindowRecord.window_id, window_id)):
            if value is not None:
                q = q.where(col == value)
        return s.scalars(q).all()

    @staticmethod
    def _window_dict(w: WindowRecord) -> dict:
        return {
            "processor": w.processor, "window_id": w.window_id, "run_id": w.run_id,
            "first_orbit": w.first_orbit, "last_orbit": w.last_orbit, "start": w.start_time, "end": w.end_time,
            "orbit_epoch": w.orbit_epoch, "total_hits": w.total_hits, "hits_per_chamber": w.hits_per_chamber,
            "rows": w.rows, "rejected": w.rejected, "rejected_by_reason": w.rejected_by_reason,
            "late_hits": w.late_hits, "ancillary": w.ancillary, "special_channel_hits": w.special_channel_hits,
            "config_hash": w.config_hash, "dtlive_version": w.dtlive_version, "host": w.host,
            "result_topic": w.result_topic, "result_partition": w.result_partition, "result_offset": w.result_offset,
            "inputs": [{"topic": i.topic, "partition": i.partition, "first_offset": i.first_offset,
                        "last_offset": i.last_offset} for i in w.inputs],
            "recorded_at": w.recorded_at,
        }  # fmt: skip

    def provenance(
        self,
        window_id: int | None = None,
        *,
        processor: str | None = None,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
    ) -> dict:
        """Which inputs, code and configuration made one window (by id) or the windows of a time range.

        Returns ``{"windows", "processors", "start", "end", "inputs": [{topic, partition, ranges,
        messages}], "results": [...same for where the results landed...], "code": {"dtlive_versions",
        "git_commits"}, "configuration": {"config_hashes", "configs": {run_id: config}}, "runs": [...]}``;
        offset ranges are inclusive and merged per partition. A time range without windows gives
        ``"windows": 0`` and empty lists; an unknown window id raises KeyError.
        """
        if window_id is None and start is None and end is None:
            raise ValueError("give a window id or a time range (start and/or end)")
        with self._tx(write=False) as s:
            wins = self._select_windows(s, start, end, None, processor, window_id)
            run_ids = sorted({w.run_id for w in wins if w.run_id})
            runs = s.scalars(sa.select(ProcessingRun).where(ProcessingRun.run_id.in_(run_ids))).all()
            tags = self._tags_for(s, "run", run_ids)
        if not wins and window_id is not None:
            raise KeyError(f"no recorded window {window_id}" + (f" of processor {processor!r}" if processor else ""))

        def merged(pairs: Iterable[tuple[tuple[str, int], tuple[int, int]]]) -> list[dict]:
            groups: dict[tuple[str, int], list[tuple[int, int]]] = {}
            for key, rng in pairs:
                groups.setdefault(key, []).append(rng)
            out = []
            for (topic, partition), rngs in sorted(groups.items()):
                m = merge_offset_ranges(rngs)
                out.append({"topic": topic, "partition": partition, "ranges": m,
                            "messages": sum(b - a + 1 for a, b in m)})
            return out

        per_proc: dict[str, list[int]] = {}
        for w in wins:
            per_proc.setdefault(w.processor, []).append(w.window_id)
        starts = [w.start_time for w in wins if w.start_time is not None]
        ends = [w.end_time for w in wins if w.end_time is not None]
        return {
            "windows": len(wins),
            "processors": {p: {"windows": len(ids), "first_window": min(ids), "last_window": max(ids)}
                           for p, ids in sorted(per_proc.items())},
            "start": min(starts, default=None),
            "end": max(ends, default=None),
            "inputs": merged(((i.topic, i.partition), (i.first_offset, i.last_offset)) for w in wins for i in w.inputs),
            "results": merged(((w.result_topic, w.result_partition), (w.result_offset, w.result_offset)) for w in wins),
            "code": {
                "dtlive_versions": sorted({v for v in [*(w.dtlive_version for w in wins),
                                                       *(r.dtlive_version for r in runs)] if v}),
                "git_commits": sorted({r.git_commit for r in runs if r.git_commit}),
            },
            "configuration": {
                "config_hashes": sorted({h for h in [*(w.config_hash for w in wins),
                                                     *(r.config_hash for r in runs)] if h}),
                "configs": {r.run_id: r.config for r in runs},
            },
            "runs": [self._run_dict(r, tags) for r in runs],
        }  # fmt: skip


def _window_row(msg: dict, topic: str, partition: int, offset: int) -> tuple[dict, list[dict]]:
    """Column values of a ``windows`` row and its ``window_inputs`` rows from one parsed message."""
    w = msg["window"]
    prov = msg.get("provenance") or {}
    counts = msg.get("counts") or {}
    rejected = counts.get("rejected") or {}
    if not isinstance(rejected, Mapping):  # an older producer may send a plain number
        rejected = {"unknown": int(rejected)}
    row = {
        "processor": prov.get("processor") or UNKNOWN_PROCESSOR,
        "window_id": int(w["id"]),
        "run_id": prov.get("run_id"),
        "first_orbit": int(w.get("first_orbit", -1)),
        "last_orbit": int(w.get("last_orbit", -1)),
        "start_time": _opt_utc(w.get("start")),
        "end_time": _opt_utc(w.get("end")),
        "orbit_epoch": None if prov.get("orbit_epoch") is None else float(prov["orbit_epoch"]),
        "total_hits": int(msg.get("total_hits", 0)),
        "hits_per_chamber": _jsonable(msg.get("hits_per_chamber")),
        "rows": int(counts.get("rows", 0)),
        "rejected": sum(int(v) for v in rejected.values()),
        "rejected_by_reason": _jsonable(dict(rejected)),
        "late_hits": int(counts.get("late_hits", 0)),
        "ancillary": int(counts.get("ancillary", 0)),
        "special_channel_hits": int(counts.get("special_channel_hits", 0)),
        "config_hash": prov.get("config_hash"),
        "dtlive_version": prov.get("dtlive_version"),
        "host": prov.get("host"),
        "result_topic": topic,
        "result_partition": int(partition),
        "result_offset": int(offset),
        "provenance": _jsonable(prov),
        "recorded_at": _now(),
    }
    inputs = [
        {"topic": i.get("topic") or prov.get("topic") or "", "partition": int(i["partition"]),
         "first_offset": int(i["first_offset"]), "last_offset": int(i["last_offset"])}
        for i in prov.get("inputs") or []
    ]  # fmt: skip
    return row, inputs
