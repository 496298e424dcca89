"""Data-quality periods, annotations and tags, detector runs: the :class:`PeriodsMixin` part of :class:`Ledger`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from dtlive.storage.ledger.models import (
    _TARGET_MODELS,
    TARGETS,
    Annotation,
    DetectorRun,
    DQPeriod,
    ProcessingRun,
    Tag,
    _now,
)
from dtlive.storage.ledger.queries import Q, _as_q
from dtlive.storage.ledger.values import _UNSET, TimeLike, _chunks, _jsonable, _merge_intervals, _opt_utc, to_utc


class PeriodsMixin:
    """Periods, annotations, tags and detector runs of a :class:`~dtlive.storage.ledger.Ledger`, which inherits them.

    Uses the ledger's ``engine``, ``_tx`` (a session in a transaction) and ``_retry`` (a write retried on a
    unique-key race).

    >>> from dtlive.storage.ledger import Ledger
    >>> led = Ledger("sqlite://")
    >>> pid = led.add_period(1714564800.0, None, "HV trip")
    >>> aid = led.annotate("period", pid, "chamber 2 only"); led.tag("period", pid, "hv")
    >>> [a["text"] for a in led.annotations("period", pid)], led.period(pid)["tags"], led.period(pid)["end"] is None
    (['chamber 2 only'], ['hv'], True)
    """

    if TYPE_CHECKING:  # given by the Ledger
        engine: sa.Engine

        def _tx(self, write: bool = True) -> AbstractContextManager[Session]: ...

        def _retry(self, fn: Callable[[Session], Any], attempts: int = 3) -> Any: ...

    # ------------------------------------------------------------------------- data-quality periods

    def add_period(
        self,
        start: TimeLike,
        end: TimeLike | None,
        reason: str,
        *,
        automatic: bool = True,
        who: str | None = None,
        kind: str = "bad",
        detail: dict | None = None,
    ) -> int:
        """Flag [start, end) (``end`` None: still going on) as ``kind`` (bad, good, warning...); returns its id."""
        start_t, end_t = to_utc(start), _opt_utc(end)
        if end_t is not None and end_t < start_t:
            raise ValueError(f"period ends ({end_t}) before it starts ({start_t})")
        now = _now()
        with self._tx() as s:
            p = DQPeriod(kind=kind, start_time=start_t, end_time=end_t, reason=reason, automatic=automatic, who=who,
                         detail=_jsonable(detail), created_at=now, updated_at=now)
            s.add(p)
            s.flush()
            return p.id

    def end_period(self, period_id: int, end: TimeLike) -> None:
        """Set the end of a period (typically one added with ``end=None``)."""
        self.edit_period(period_id, end=end)

    def edit_period(
        self,
        period_id: int,
        *,
        start: TimeLike = _UNSET,
        end: TimeLike | None = _UNSET,
        reason: str = _UNSET,
        kind: str = _UNSET,
        automatic: bool = _UNSET,
        who: str | None = _UNSET,
        detail: dict | None = _UNSET,
    ) -> None:
        """Change some fields of a period (only those given)."""
        with self._tx() as s:
            p = s.get(DQPeriod, int(period_id))
            if p is None:
                raise KeyError(f"no period {period_id}")
            if start is not _UNSET:
                p.start_time = to_utc(start)
            if end is not _UNSET:
                p.end_time = _opt_utc(end)
            if p.end_time is not None and p.end_time < p.start_time:
                raise ValueError(f"period ends ({p.end_time}) before it starts ({p.start_time})")
            for name, value in (("reason", reason), ("kind", kind), ("automatic", automatic), ("who", who)):
                if value is not _UNSET:
                    setattr(p, name, value)
            if detail is not _UNSET:
                p.detail = _jsonable(detail)
            p.updated_at = _now()

    def period(self, period_id: int) -> dict:
        """One period as a dict (KeyError if unknown)."""
        with self._tx(write=False) as s:
            p = s.get(DQPeriod, int(period_id))
            if p is None:
                raise KeyError(f"no period {period_id}")
            return self._period_dict(p, self._tags_for(s, "period", [str(p.id)]))

    def periods(
        self,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        kind: str | None = None,
        *,
        automatic: bool | None = None,
    ) -> list[dict]:
        """Periods overlapping [start, end), oldest first, optionally of one kind / automatic or manual only."""
        q = sa.select(DQPeriod).order_by(DQPeriod.start_time, DQPeriod.id)
        if end is not None:
            q = q.where(DQPeriod.start_time < to_utc(end))
        if start is not None:
            q = q.where(sa.or_(DQPeriod.end_time.is_(None), DQPeriod.end_time > to_utc(start)))
        if kind is not None:
            q = q.where(DQPeriod.kind == kind)
        if automatic is not None:
            q = q.where(DQPeriod.automatic == automatic)
        with self._tx(write=False) as s:
            ps = s.scalars(q).all()
            tags = self._tags_for(s, "period", [str(p.id) for p in ps])
        return [self._period_dict(p, tags) for p in ps]

    def bad_intervals(
        self, start: TimeLike, end: TimeLike, kinds: Sequence[str] = ("bad",)
    ) -> list[tuple[datetime, datetime]]:
        """The union of the ``kinds`` periods within [start, end): sorted, non-overlapping, clipped to the range."""
        lo, hi = to_utc(start), to_utc(end)
        spans = []
        for kind in kinds:
            for p in self.periods(lo, hi, kind):
                a, b = max(p["start"], lo), min(p["end"] or hi, hi)
                if a < b:
                    spans.append((a, b))
        return _merge_intervals(spans)

    @staticmethod
    def _period_dict(p: DQPeriod, tags: Mapping[str, list[str]]) -> dict:
        return {
            "id": p.id, "kind": p.kind, "start": p.start_time, "end": p.end_time, "reason": p.reason,
            "automatic": p.automatic, "who": p.who, "detail": p.detail, "created_at": p.created_at,
            "updated_at": p.updated_at, "tags": tags.get(str(p.id), []),
        }  # fmt: skip

    # ----------------------------------------------------------------------- annotations and tags

    @staticmethod
    def _target_key(s: Session, target: str, target_id: str | int) -> str:
        if target not in _TARGET_MODELS:
            raise ValueError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")
        model = _TARGET_MODELS[target]
        try:
            pk = str(target_id) if model is ProcessingRun else int(target_id)
        except (TypeError, ValueError):
            raise KeyError(f"no {target} {target_id!r}") from None
        if s.get(model, pk) is None:
            raise KeyError(f"no {target} {target_id!r}")
        return str(pk)

    def annotate(self, target: str, target_id: str | int, text: str, who: str | None = None) -> int:
        """Attach a note to a ``run`` / ``period`` / ``detector_run``; returns the annotation id."""
        now = _now()
        with self._tx() as s:
            a = Annotation(target=target, target_id=self._target_key(s, target, target_id), text=text, who=who,
                           created_at=now, updated_at=now)
            s.add(a)
            s.flush()
            return a.id

    def edit_annotation(self, annotation_id: int, text: str, who: str | None = None) -> None:
        """Replace an annotation's text (``who`` made the edit, if given)."""
        with self._tx() as s:
            a = s.get(Annotation, int(annotation_id))
            if a is None:
                raise KeyError(f"no annotation {annotation_id}")
            a.text, a.updated_at = text, _now()
            if who is not None:
                a.who = who

    def delete_annotation(self, annotation_id: int) -> None:
        """Remove an annotation."""
        with self._tx() as s:
            a = s.get(Annotation, int(annotation_id))
            if a is None:
                raise KeyError(f"no annotation {annotation_id}")
            s.delete(a)

    def annotations(self, target: str | None = None, target_id: str | int | None = None) -> list[dict]:
        """Annotations, oldest first, optionally of one target (kind, or kind and id)."""
        q = sa.select(Annotation).order_by(Annotation.created_at, Annotation.id)
        if target is not None:
            q = q.where(Annotation.target == target)
        if target_id is not None:
            q = q.where(Annotation.target_id == str(target_id))
        with self._tx(write=False) as s:
            return [self._annotation_dict(a) for a in s.scalars(q)]

    @staticmethod
    def _annotation_dict(a: Annotation) -> dict:
        return {"id": a.id, "target": a.target, "target_id": a.target_id, "text": a.text, "who": a.who,
                "created_at": a.created_at, "updated_at": a.updated_at}

    def tag(self, target: str, target_id: str | int, *tags: str) -> None:
        """Add tags to a ``run`` / ``period`` / ``detector_run`` (tags it already has are ignored)."""
        self._retry(lambda s: self._add_tags(s, target, target_id, tags))

    def _add_tags(self, s: Session, target: str, target_id: str | int, tags: Iterable[str]) -> None:
        key = self._target_key(s, target, target_id)
        wanted = {t.strip() for t in tags if t and t.strip()}
        have = set(s.scalars(sa.select(Tag.tag).where(Tag.target == target, Tag.target_id == key)))
        s.add_all(Tag(target=target, target_id=key, tag=t) for t in sorted(wanted - have))
        s.flush()

    def untag(self, target: str, target_id: str | int, *tags: str) -> None:
        """Remove tags (tags it does not have are ignored)."""
        with self._tx() as s:
            s.execute(sa.delete(Tag).where(Tag.target == target, Tag.target_id == str(target_id),
                                           Tag.tag.in_([t.strip() for t in tags])))

    def tags(self, target: str, target_id: str | int) -> list[str]:
        """The sorted tags of one target."""
        with self._tx(write=False) as s:
            return self._tags_for(s, target, [str(target_id)]).get(str(target_id), [])

    @staticmethod
    def _tags_for(s: Session, target: str, ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for chunk in _chunks(list(ids)):
            q = sa.select(Tag.target_id, Tag.tag).where(Tag.target == target, Tag.target_id.in_(chunk))
            for tid, tag in s.execute(q.order_by(Tag.tag)):
                out.setdefault(tid, []).append(tag)
        return out

    def search(self, text: str) -> list[dict]:
        """Case-insensitive substring search over annotation texts and tags.

        Returns ``[{"target", "target_id", "match": "annotation" | "tag", "text", "annotation_id"}]``.
        """
        with self._tx(write=False) as s:
            notes = s.scalars(sa.select(Annotation).where(Annotation.text.icontains(text, autoescape=True))
                              .order_by(Annotation.created_at, Annotation.id)).all()
            tags = s.scalars(sa.select(Tag).where(Tag.tag.icontains(text, autoescape=True))
                             .order_by(Tag.target, Tag.target_id, Tag.tag)).all()
        return [{"target": a.target, "target_id": a.target_id, "match": "annotation", "text": a.text,
                 "annotation_id": a.id} for a in notes] + [
                {"target": t.target, "target_id": t.target_id, "match": "tag", "text": t.tag,
                 "annotation_id": None} for t in tags]  # fmt: skip

    # ------------------------------------------------------------------------------ detector runs

    def open_detector_run(
        self,
        start: TimeLike,
        first_orbit: int,
        metadata: dict | None = None,
        tags: Iterable[str] = (),
    ) -> int:
        """Start a detector run (orbit-counter reset or run change); returns its number.

        A run still open is closed at ``start`` (its last orbit left unknown).
        """
        start_t = to_utc(start)
        with self._tx() as s:
            for old in s.scalars(sa.select(DetectorRun).where(DetectorRun.end_time.is_(None))):
                if old.start_time > start_t:
                    raise ValueError(f"detector run {old.id} started after {start_t}; close it first")
                old.end_time = start_t
            run = DetectorRun(start_time=start_t, first_orbit=int(first_orbit), meta=_jsonable(metadata or {}),
                              created_at=_now())
            s.add(run)
            s.flush()
            if tags:
                self._add_tags(s, "detector_run", run.id, tags)
            return run.id

    def close_detector_run(self, run_id: int, end: TimeLike, last_orbit: int | None = None) -> None:
        """End a detector run at ``end`` (and its last orbit, if known)."""
        with self._tx() as s:
            run = s.get(DetectorRun, int(run_id))
            if run is None:
                raise KeyError(f"no detector run {run_id}")
            end_t = to_utc(end)
            if end_t < run.start_time:
                raise ValueError(f"detector run {run_id} cannot end ({end_t}) before it starts ({run.start_time})")
            run.end_time = end_t
            if last_orbit is not None:
                run.last_orbit = int(last_orbit)

    def current_detector_run(self) -> dict | None:
        """The detector run still open (the newest, if several), or None."""
        with self._tx(write=False) as s:
            q = sa.select(DetectorRun).where(DetectorRun.end_time.is_(None))
            run = s.scalars(q.order_by(DetectorRun.start_time.desc(), DetectorRun.id.desc()).limit(1)).first()
            return None if run is None else self._detector_run_dict(run, self._tags_for(s, "detector_run",
                                                                                         [str(run.id)]))

    def detector_run(self, run_id: int) -> dict:
        """One detector run as a dict (KeyError if unknown)."""
        with self._tx(write=False) as s:
            run = s.get(DetectorRun, int(run_id))
            if run is None:
                raise KeyError(f"no detector run {run_id}")
            return self._detector_run_dict(run, self._tags_for(s, "detector_run", [str(run.id)]))

    def detector_runs(self, query: Q | None = None) -> list[dict]:
        """Detector runs matching a :class:`Q` query (all without one), oldest first."""
        q = sa.select(DetectorRun).order_by(DetectorRun.start_time, DetectorRun.id)
        exact = True
        if query is not None:
            clause, exact = _as_q(query).clause(self.engine.dialect.name)
            q = q.where(clause)
        with self._tx(write=False) as s:
            runs = s.scalars(q).all()
            tags = self._tags_for(s, "detector_run", [str(r.id) for r in runs])
        out = [self._detector_run_dict(r, tags) for r in runs]
        return out if exact or query is None else [r for r in out if query.matches(r)]

    @staticmethod
    def _detector_run_dict(r: DetectorRun, tags: Mapping[str, list[str]]) -> dict:
        return {"id": r.id, "start": r.start_time, "end": r.end_time, "first_orbit": r.first_orbit,
                "last_orbit": r.last_orbit, "metadata": r.meta, "tags": tags.get(str(r.id), [])}
