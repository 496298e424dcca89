"""Canned analyses started by an alert: one signature, a registry, plug-ins by entry point.

An analysis is a callable ``(alert: Alert, ctx: AnalysisContext) -> AnalysisResult``. The context gives the
``history`` store (past windows), the ``ledger`` (bad periods, input provenance, task states), an
``artifacts_dir`` for files, the rule's ``params`` (already merged with the analysis' defaults) and ``now``.
The result carries a JSON-ready ``summary`` (what goes back to Kafka), an xarray ``data`` Dataset, the
``artifacts`` written and a ``provenance`` block (analysis, version, code, params, alert, the windows and
time ranges used, and their inputs from :meth:`dtlive.storage.ledger.Ledger.provenance`).

Register with the :func:`analysis` decorator; other packages add theirs through the entry-point group
``dtlive.analyses`` (``my_rate = "mypkg.mod:my_rate"`` under ``[project.entry-points."dtlive.analyses"]``),
found by :func:`available_analyses` / :func:`get_analysis`. A plug-in that fails to load is logged and listed
by :func:`broken_analyses`; the others keep working. Built-ins (registered through dtlive's own entry points):

- ``rate_excess``: per-chamber hit rate in an on-window around the trigger against earlier background
  windows, bad periods left out, Li & Ma significance and Poisson p-value per chamber and in total;
- ``snapshot``: the detector products of the windows around the trigger as a NetCDF file;
- ``notebook``: a parameterised notebook run with papermill (default: ``alert_template.ipynb``).

>>> import tempfile
>>> from dtlive.alerts import parse_notice
>>> from dtlive.storage.history import HistoryStore
>>> {"rate_excess", "snapshot", "notebook"} <= set(available_analyses())
True
>>> @analysis(name="doc_example", version="0.1", defaults={"factor": 2}, register=False)
... def doc_example(alert, ctx):
...     return AnalysisResult(summary={"alert": alert.id, "answer": 21 * ctx.params["factor"]})
>>> ctx = AnalysisContext(HistoryStore(tempfile.mkdtemp()), artifacts_dir=tempfile.mkdtemp())
>>> alert = parse_notice(b'{"mission": "IceCube", "id": "7", "trigger_time": "2024-05-01T12:00:00Z"}')
>>> r = doc_example(alert, ctx)
>>> r.name, r.version, r.summary, r.provenance["params"]
('doc_example', '0.1', {'status': 'ok', 'alert': 'IceCube:7', 'answer': 42}, {'factor': 2})
>>> get_analysis("rate_excess")(alert, ctx).summary["status"]     # an empty history: no data, no exception
'no_data'

Long on purpose: it holds the registry and the built-in analyses with their statistics and provenance;
a new analysis is a plug-in in its own package, not an edit here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from scipy.special import gammainc, gammaln, hyp1f1, ndtri_exp, xlogy

from dtlive.alerts.notices import Alert, alert_to_dict
from dtlive.core.messages import ANALYSIS_SCHEMA
from dtlive.service.extras import extra
from dtlive.storage.history import HistoryStore, overlaps

__all__ = [
    "GROUP",
    "TEMPLATE",
    "Analysis",
    "AnalysisContext",
    "AnalysisResult",
    "analysis",
    "available_analyses",
    "broken_analyses",
    "default_artifacts_dir",
    "discover",
    "get_analysis",
    "li_ma_significance",
    "no_data",
    "notebook",
    "poisson_log_sf",
    "poisson_sf",
    "rate_excess",
    "register_analysis",
    "run_analysis",
    "sigma_from_log_p",
    "snapshot",
    "unregister_analysis",
]

GROUP = "dtlive.analyses"  # entry-point group of analysis plug-ins
ENV_ARTIFACTS = "DTLIVE_ARTIFACTS"
TEMPLATE = Path(__file__).with_name("alert_template.ipynb")
MAX_WINDOW_S = 10.0  # windows are 1-5 s long: look this far back for windows overlapping a range
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- context / result


def default_artifacts_dir() -> Path:
    """``$DTLIVE_ARTIFACTS`` or ``platformdirs.user_data_dir("dtlive")/analyses``.

    >>> old = os.environ.get(ENV_ARTIFACTS)
    >>> os.environ[ENV_ARTIFACTS] = "~/dq/analyses"
    >>> default_artifacts_dir() == Path.home() / "dq" / "analyses"
    True
    >>> _ = os.environ.pop(ENV_ARTIFACTS) if old is None else os.environ.update({ENV_ARTIFACTS: old})
    """
    if os.environ.get(ENV_ARTIFACTS):
        return Path(os.environ[ENV_ARTIFACTS]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("dtlive")) / "analyses"


@dataclass
class AnalysisContext:
    """What an analysis may use besides the alert.

    ``history``: a :class:`~dtlive.storage.history.HistoryStore`; ``ledger``: a
    :class:`~dtlive.storage.ledger.Ledger` or None (then no bad periods and no input provenance);
    ``artifacts_dir``: where files go (created on first use);
    ``params``: the rule's parameters (the registry merges them with the analysis' defaults before the call);
    ``now``: UNIX seconds of the run (default: the wall clock); ``run``: filled by the registry with the
    common provenance of this run (analysis, version, code, params, alert, ran_at).

    >>> import tempfile
    >>> ctx = AnalysisContext(HistoryStore(tempfile.mkdtemp()), artifacts_dir=tempfile.mkdtemp(), now=1.7e9)
    >>> ctx.windows(1.7e9 - 60, 1.7e9), ctx.bad_intervals(0, 1.7e9), ctx.inputs(0, 1.7e9)  # empty store, no ledger
    (None, [], {})
    >>> ctx.artifact_path("rates.nc").parent == ctx.artifacts_dir
    True
    """

    history: HistoryStore
    ledger: Any = None
    artifacts_dir: Path = field(default_factory=default_artifacts_dir)
    params: dict[str, Any] = field(default_factory=dict)
    now: float = field(default_factory=time.time)  # None given: the wall clock too
    run: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.artifacts_dir = Path(self.artifacts_dir).expanduser()
        self.params = dict(self.params or {})
        self.now = float(time.time() if self.now is None else self.now)

    @classmethod
    def default(cls, **kwargs) -> AnalysisContext:
        """The default history store, the default ledger (``DTLIVE_DB``) and artifacts directory."""
        from dtlive.storage.ledger import Ledger

        kwargs.setdefault("history", HistoryStore())
        kwargs.setdefault("ledger", Ledger())
        return cls(**kwargs)

    def bad_intervals(self, start: float, end: float) -> list[tuple[float, float]]:
        """Bad periods of the ledger within [start, end) as UNIX-second pairs ([] without a ledger)."""
        if self.ledger is None or not end > start:
            return []
        return [(a.timestamp(), b.timestamp()) for a, b in self.ledger.bad_intervals(start, end)]

    def windows(self, start: float, end: float) -> xr.Dataset | None:
        """The stored windows that overlap [start, end) (UNIX s), with a boolean ``bad`` coordinate (window
        overlaps a bad period of the ledger); None when there is none."""
        ds = self.history.load(start - MAX_WINDOW_S, end)
        if ds is None:
            return None
        s, e = _seconds(ds.time.values), _seconds(ds.window_end.values)
        e = np.where(np.isnan(e), s, e)
        keep = np.flatnonzero(np.where(e > s, e > start, s >= start))
        if not len(keep):
            return None
        ds, s, e = ds.isel(time=keep), s[keep], e[keep]
        bad = overlaps(s, e, self.bad_intervals(float(s.min()), float(e.max())))
        return ds.assign_coords(bad=("time", bad, {"long_name": "window overlaps a bad period (ledger)"}))

    def inputs(self, start: float, end: float, processor: str | None = None) -> dict:
        """:meth:`Ledger.provenance` of the windows overlapping [start, end), JSON-ready ({} without a ledger)."""
        if self.ledger is None or not end > start:
            return {}
        if processor == "":
            from dtlive.storage.ledger import UNKNOWN_PROCESSOR

            processor = UNKNOWN_PROCESSOR
        return _jsonable(self.ledger.provenance(start=start, end=end, processor=processor))

    def artifact_path(self, filename: str) -> Path:
        """``artifacts_dir / filename``, the directory created."""
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        return self.artifacts_dir / filename


@dataclass
class AnalysisResult:
    """What an analysis returns. ``name``/``version`` are set by the registry; ``summary`` is JSON-ready and
    holds ``status`` (``ok``, ``no_data``, ``error``) and, unless ok, a ``reason``; ``data`` is the
    xarray result; ``artifacts`` the files written; ``provenance`` what the numbers come from.

    >>> r = AnalysisResult(name="rate_excess", version="1", summary={"status": "ok", "max_significance_sigma": 2.5},
    ...                    provenance={"alert": {"id": "Swift:1"}})
    >>> msg = r.to_dict()
    >>> r.status, msg["schema"], msg["alert"], msg["data_vars"]
    ('ok', 'dtlive.analysis/1', {'id': 'Swift:1'}, [])
    """

    name: str = ""
    version: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    data: xr.Dataset = field(default_factory=xr.Dataset)
    artifacts: list[Path] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "ok"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready message of this result (``"schema": "dtlive.analysis/1"``; ``data`` by its names)."""
        return _jsonable({
            "schema": ANALYSIS_SCHEMA, "analysis": self.name, "version": self.version, "status": self.status,
            "alert": self.provenance.get("alert"), "summary": self.summary,
            "artifacts": [str(a) for a in self.artifacts], "data_vars": sorted(map(str, self.data.data_vars)),
            "provenance": self.provenance,
        })  # fmt: skip


def no_data(reason: str, **summary) -> AnalysisResult:
    """A result saying there was nothing to analyse (and why).

    >>> r = no_data("no windows in the history store", time_ranges={"on": ["a", "b"]}, trigger_time="t")
    >>> r.status, r.summary["reason"], r.provenance, r.data.attrs["status"]
    ('no_data', 'no windows in the history store', {'time_ranges': {'on': ['a', 'b']}}, 'no_data')
    """
    return AnalysisResult(summary={"status": "no_data", "reason": reason, **summary},
                          data=xr.Dataset(attrs={"status": "no_data", "reason": reason}),
                          provenance={k: v for k, v in summary.items() if k in ("time_ranges", "bad_intervals")})


# ----------------------------------------------------------------------------------------------- registry


class Analysis:
    """A registered analysis: call it as ``analysis(alert, ctx)``.

    The call merges ``ctx.params`` over ``defaults`` (unknown names raise ValueError when ``defaults`` is
    given), runs the function and completes its :class:`AnalysisResult` (name, version, common provenance).

    >>> import tempfile
    >>> from dtlive.alerts.notices import parse_notice
    >>> def hits_needed(alert, ctx):
    ...     "Hits a chamber must see."
    ...     return AnalysisResult(summary={"hits": ctx.params["rate_hz"] * ctx.params["seconds"]})
    >>> a = Analysis(hits_needed, "hits_needed", version="2", defaults={"rate_hz": 50, "seconds": 10})
    >>> a.description, a.params({"seconds": 4})
    ('Hits a chamber must see.', {'rate_hz': 50, 'seconds': 4})
    >>> ctx = AnalysisContext(HistoryStore(tempfile.mkdtemp()), params={"seconds": 2}, artifacts_dir=tempfile.mkdtemp())
    >>> r = a(parse_notice(b'{"mission": "Swift", "id": "1"}'), ctx)
    >>> r.name, r.version, r.summary, r.provenance["params"]
    ('hits_needed', '2', {'status': 'ok', 'hits': 100}, {'rate_hz': 50, 'seconds': 2})
    >>> a.params({"minutes": 1})
    Traceback (most recent call last):
    ...
    ValueError: analysis 'hits_needed' has no parameter 'minutes' (known: rate_hz, seconds)
    """

    def __init__(self, func: Callable[[Alert, AnalysisContext], AnalysisResult], name: str, version: str = "1",
                 defaults: Mapping[str, Any] | None = None, description: str | None = None):
        if not callable(func):
            raise TypeError(f"an analysis must be callable, not {type(func).__name__}")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
            raise ValueError(f"bad analysis name {name!r}")
        functools.update_wrapper(self, func)
        self.func = func
        self.name = name
        self.version = str(version)
        self.defaults = dict(defaults) if defaults is not None else None
        doc = (func.__doc__ or "").strip()
        self.description = description or (doc.splitlines()[0] if doc else "")
        self.source = f"{getattr(func, '__module__', '?')}:{getattr(func, '__qualname__', repr(func))}"
        self.entry_point: str | None = None  # "module:attr (distribution version)" once found by discover()

    def __repr__(self) -> str:
        return f"<Analysis {self.name} v{self.version} ({self.source})>"

    def params(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The effective parameters: defaults overridden by ``given``."""
        given = dict(given or {})
        if self.defaults is None:
            return given
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise ValueError(f"analysis {self.name!r} has no parameter {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(sorted(self.defaults))})")
        return {**self.defaults, **given}

    def __call__(self, alert: Alert, ctx: AnalysisContext) -> AnalysisResult:
        params = self.params(ctx.params)
        run = {
            "analysis": self.name, "version": self.version, "source": self.source, "entry_point": self.entry_point,
            "code": _code_version(), "params": _jsonable(params), "alert": _alert_brief(alert),
            "ran_at": _iso(ctx.now),
        }  # fmt: skip
        result = self.func(alert, dataclasses.replace(ctx, params=params, run=run))
        if not isinstance(result, AnalysisResult):
            raise TypeError(f"analysis {self.name!r} returned {type(result).__name__}, not an AnalysisResult")
        data = result.data if result.data is not None else xr.Dataset()
        return dataclasses.replace(
            result, name=self.name, version=self.version, data=data,
            summary=_jsonable({"status": "ok", **result.summary}),
            artifacts=[Path(a) for a in result.artifacts],
            provenance=_jsonable({**run, **result.provenance, **{k: run[k] for k in ("analysis", "version", "code")}}),
        )  # fmt: skip


_REGISTRY: dict[str, Analysis] = {}
_BROKEN: dict[str, str] = {}
_LOCK = threading.RLock()
_discovered = False


def analysis(name: str | None = None, version: str = "1", *, defaults: Mapping[str, Any] | None = None,
             description: str | None = None, register: bool = True, replace: bool = False):
    """Decorator: make ``func(alert, ctx) -> AnalysisResult`` an :class:`Analysis` and register it.

    ``defaults`` declares the parameters (and lets the call reject unknown ones); ``register=False`` only
    wraps; ``replace=True`` lets it take a name another function holds.

    >>> @analysis(name="doc_counter", version="3", defaults={"scale": 1})
    ... def doc_counter(alert, ctx):
    ...     return AnalysisResult(summary={"scaled": ctx.params["scale"] * 2})
    >>> get_analysis("doc_counter") is doc_counter, doc_counter.version, doc_counter.defaults
    (True, '3', {'scale': 1})
    >>> unregister_analysis("doc_counter")
    """

    def wrap(func):
        a = Analysis(func, name or func.__name__, version, defaults, description)
        if register:
            register_analysis(a, replace=replace)
        return a

    return wrap


def register_analysis(a: Analysis, *, replace: bool = False) -> Analysis:
    """Put ``a`` in the registry under ``a.name``; ValueError if other code holds the name (unless ``replace``).

    Registering the same function again (a module imported twice) is fine.

    >>> def rates(alert, ctx):
    ...     return AnalysisResult(summary={"rate_hz": 50.0})
    >>> def other_rates(alert, ctx):
    ...     return AnalysisResult(summary={"rate_hz": 60.0})
    >>> a = Analysis(rates, "doc_registered")
    >>> register_analysis(a) is a, register_analysis(Analysis(rates, "doc_registered")).source  # the same: fine
    (True, 'dtlive.alerts.analyses:rates')
    >>> register_analysis(Analysis(other_rates, "doc_registered"))
    Traceback (most recent call last):
    ...
    ValueError: analysis 'doc_registered' is already registered by dtlive.alerts.analyses:rates; give replace=True
    >>> unregister_analysis("doc_registered")
    """
    if not isinstance(a, Analysis):
        raise TypeError(f"register an Analysis (use the @analysis decorator), not {type(a).__name__}")
    with _LOCK:
        old = _REGISTRY.get(a.name)
        if old is not None and old is not a and old.source != a.source and not replace:
            raise ValueError(f"analysis {a.name!r} is already registered by {old.source}; give replace=True")
        if old is not None and a.entry_point is None:
            a.entry_point = old.entry_point
        _REGISTRY[a.name] = a
        _BROKEN.pop(a.name, None)
    return a


def unregister_analysis(name: str) -> None:
    """Remove an analysis from the registry (KeyError if unknown).

    >>> _ = register_analysis(Analysis(lambda alert, ctx: AnalysisResult(), "doc_gone"))
    >>> unregister_analysis("doc_gone")
    >>> "doc_gone" in available_analyses()
    False
    >>> unregister_analysis("doc_gone")
    Traceback (most recent call last):
    ...
    KeyError: 'doc_gone'
    """
    with _LOCK:
        del _REGISTRY[name]


def _entry_points(group: str):
    return importlib.metadata.entry_points(group=group)


def discover(reload: bool = False) -> dict[str, str]:
    """Load the plug-ins of the ``dtlive.analyses`` entry-point group (once, or again with ``reload``).

    An entry point names an :class:`Analysis` (made by the decorator) or a plain callable (registered under
    the entry point's name, version from its ``version`` attribute or its distribution). Whatever fails to
    load is logged and kept in :func:`broken_analyses`; returns that dict (entry-point name -> error).

    >>> discover(reload=True)  # the installed plug-ins (dtlive's own) all load: nothing broken
    {}
    >>> sorted(n for n, a in available_analyses().items() if (a.entry_point or "").startswith("dtlive.alerts."))
    ['notebook', 'rate_excess', 'snapshot']
    """
    global _discovered
    with _LOCK:
        if _discovered and not reload:
            return dict(_BROKEN)
        _BROKEN.clear()
        for ep in _entry_points(GROUP):
            dist = getattr(ep, "dist", None)
            where = f"{ep.value}" + (f" ({dist.name} {dist.version})" if dist is not None else "")
            try:
                obj = ep.load()
                if isinstance(obj, Analysis):
                    a = obj
                elif callable(obj):
                    version = getattr(obj, "version", None) or (dist.version if dist is not None else "0")
                    a = Analysis(obj, ep.name, str(version))
                else:
                    raise TypeError(f"it is a {type(obj).__name__}, not an analysis")
                if a.name != ep.name:
                    raise ValueError(f"the entry point is named {ep.name!r} but the analysis {a.name!r}")
                old = _REGISTRY.get(a.name)
                if old is not None and old is not a and old.source != a.source:
                    raise ValueError(f"name taken by {old.source}")
                a.entry_point = where
                _REGISTRY[a.name] = a
            except Exception as e:  # a broken plug-in must never break the others
                _BROKEN[ep.name] = f"{where}: {type(e).__name__}: {e}"
                log.warning("analysis plug-in %r left out: %s", ep.name, _BROKEN[ep.name])
        _discovered = True
        return dict(_BROKEN)


def available_analyses() -> dict[str, Analysis]:
    """The analyses that can run, by name (plug-ins discovered on first use).

    >>> found = available_analyses()
    >>> found["rate_excess"].version, sorted(found["snapshot"].defaults)
    ('1', ['after_s', 'before_s', 'exclude_bad'])
    """
    discover()
    with _LOCK:
        return dict(sorted(_REGISTRY.items()))


def broken_analyses() -> dict[str, str]:
    """Plug-ins that failed to load: entry-point name -> what went wrong.

    >>> _ = discover(reload=True)
    >>> broken_analyses()  # entry-point name -> why it did not load; dtlive's own plug-ins all load
    {}
    """
    return discover()


def get_analysis(name: str) -> Analysis:
    """The analysis called ``name``; KeyError (saying why) if it is unknown or its plug-in is broken.

    >>> get_analysis("snapshot").defaults["before_s"]
    60.0
    >>> try:
    ...     get_analysis("no_such_analysis")
    ... except KeyError as e:
    ...     print(e.args[0].split(" (")[0])
    no analysis 'no_such_analysis'
    """
    discover()
    with _LOCK:
        if name in _REGISTRY:
            return _REGISTRY[name]
        if name in _BROKEN:
            raise KeyError(f"analysis {name!r} is broken: {_BROKEN[name]}")
        raise KeyError(f"no analysis {name!r} (available: {', '.join(sorted(_REGISTRY)) or 'none'})")


def run_analysis(which: str | Analysis, alert: Alert, ctx: AnalysisContext, *, task_id: str | None = None
                 ) -> AnalysisResult:
    """Run an analysis (by name or object), recording ``running`` then ``done`` / ``failed`` as task states
    (kind ``analysis``) in ``ctx.ledger`` when there is one. Exceptions are recorded, then raised.

    >>> import tempfile
    >>> from dtlive.alerts.notices import parse_notice
    >>> from dtlive.storage.ledger import Ledger
    >>> ctx = AnalysisContext(HistoryStore(tempfile.mkdtemp()), Ledger("sqlite://"), artifacts_dir=tempfile.mkdtemp())
    >>> alert = parse_notice(b'{"mission": "IceCube", "id": "7", "trigger_time": "2024-05-01T12:00:00Z"}')
    >>> run_analysis("snapshot", alert, ctx, task_id="doc-task").status
    'no_data'
    >>> [s["state"] for s in ctx.ledger.task_history("doc-task")]
    ['running', 'done']
    """
    a = get_analysis(which) if isinstance(which, str) else which
    task = task_id or f"analysis/{a.name}/{alert.id}/{alert.record_number}"
    led = ctx.ledger
    if led is not None:
        led.append_state(task, "running", task_kind="analysis",
                         detail=_jsonable({"analysis": a.name, "version": a.version, "alert": alert.id,
                                           "record_number": alert.record_number, "params": ctx.params}))
    try:
        result = a(alert, ctx)
    except Exception as e:
        if led is not None:
            led.append_state(task, "failed", detail={"error": f"{type(e).__name__}: {e}"[:2000]})
        raise
    if led is not None:
        led.append_state(task, "done", detail={"status": result.status, "reason": result.summary.get("reason"),
                                               "artifacts": [str(p) for p in result.artifacts]})
    return result


# ------------------------------------------------------------------------------------------- statistics


def li_ma_significance(n_on, n_off, alpha):
    """Li & Ma (1983, eq. 17) significance of ``n_on`` counts over ``alpha * n_off`` expected, signed
    (negative for a deficit); ``alpha`` = on exposure / background exposure. Works on numpy arrays.

    Eq. 17 is the likelihood-ratio test of one common background rate against free on and off rates;
    ``scipy.special.xlogy`` gives its ``n log(...)`` terms with ``0 log 0 = 0`` for empty counts.

    >>> round(float(li_ma_significance(130, 1000, 0.1)), 3), float(li_ma_significance(100, 1000, 0.1))
    (2.721, 0.0)
    """
    n_on, n_off, alpha = (np.asarray(x, float) for x in (n_on, n_off, alpha))
    tot = n_on + n_off
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = xlogy(n_on, (1 + alpha) / alpha * n_on / tot) + xlogy(n_off, (1 + alpha) * n_off / tot)
    s = np.sqrt(np.maximum(2.0 * log_ratio, 0.0))
    out = np.where(tot > 0, np.sign(n_on - alpha * n_off) * s, 0.0)
    return out if out.ndim else out[()]


_TINY = float(np.finfo(float).tiny)  # smallest normal double: below it gammainc loses precision, then underflows


def poisson_log_sf(k: int, mu: float) -> float:
    """log P(N >= k) for N ~ Poisson(mu), accurate far into the tail.

    P(N >= k) is the regularized lower incomplete gamma function P(k, mu) (``scipy.special.gammainc``).
    Where that underflows (beyond ~1e-308), the same tail is ``pmf(k) * 1F1(1; k + 1; mu)`` (Kummer's
    function, ``scipy.special.hyp1f1``, close to 1 there), taken in logs: ``log pmf(k) = k log mu - mu -
    log k!`` (as ``scipy.stats.poisson.logpmf`` computes it, without importing ``scipy.stats``).

    >>> round(math.exp(poisson_log_sf(3, 1.0)), 6), poisson_log_sf(0, 5.0)
    (0.080301, 0.0)
    >>> round(poisson_log_sf(3000, 300.0), 3)     # a p-value of ~1e-1830
    -4212.572
    """
    k = int(k)
    if k <= 0:
        return 0.0
    if mu <= 0:
        return -math.inf
    p = float(gammainc(k, mu))
    if p >= _TINY:
        return math.log(p)
    log_pmf = float(xlogy(k, mu) - mu - gammaln(k + 1.0))
    return log_pmf + math.log(float(hyp1f1(1.0, k + 1.0, mu)))


def poisson_sf(k: int, mu: float) -> float:
    """P(N >= k) for N ~ Poisson(mu): the p-value of ``k`` counts over a known background ``mu``.

    >>> round(poisson_sf(3, 1.0), 6), poisson_sf(0, 5.0), poisson_sf(1, 0.0)
    (0.080301, 1.0, 0.0)
    """
    return math.exp(poisson_log_sf(k, mu))


def sigma_from_log_p(log_p: float) -> float:
    """The one-sided Gaussian significance of a p-value given as its log (0 for p >= 0.5; works below 1e-300).

    ``scipy.special.ndtri_exp`` inverts the normal CDF from the log of a probability, so the far tail
    (p far below the smallest double) needs no exponentiation.

    >>> round(sigma_from_log_p(math.log(2.866516e-7)), 4), sigma_from_log_p(0.0)
    (5.0, 0.0)
    """
    if log_p >= math.log(0.5):
        return 0.0
    return -float(ndtri_exp(log_p))


# -------------------------------------------------------------------------------------------- built-ins


@analysis(name="rate_excess", version="1", defaults={
    "on_before_s": 10.0, "on_after_s": 10.0, "background_s": 600.0, "gap_s": 30.0, "exclude_bad": True,
    "processor": None,
})  # fmt: skip
def rate_excess(alert: Alert, ctx: AnalysisContext) -> AnalysisResult:
    """Per-chamber hit-rate excess in an on-window around the trigger over the background before it.

    On-window: the windows overlapping [T - on_before_s, T + on_after_s). Background: the windows lying
    inside [T - on_before_s - gap_s - background_s, T - on_before_s - gap_s). Windows overlapping bad periods
    of the ledger are left out of both (``exclude_bad``); exposures are the summed durations of the windows
    used. With windows of several processors, the one with most windows is used (or ``processor``).
    ``significance_sigma`` is Li & Ma eq. 17 (background uncertainty included, signed); ``p_value`` the
    Poisson P(N >= on | expected), background taken as known, with its one-sided ``p_value_sigma``.
    Hits are not independent (a muon crossing a chamber gives ~4), so read the significance as an upper bound.

    >>> import tempfile
    >>> from dtlive.alerts.notices import parse_notice
    >>> from dtlive.core.messages import iso_utc, message_from_arrays
    >>> from dtlive.core.products import DRIFT_EDGES_NS, REGISTRY
    >>> from dtlive.core.rows import Rows
    >>> T = 1.7e9  # the trigger
    >>> arrays = REGISTRY.compute(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[1], bx=[0], tdc=[0]))
    >>> def window(i, hits):  # the 2 s window starting at T + 2 i, with ``hits`` hits in chamber 0
    ...     a = dict(arrays, total_hits=np.int64(hits), hits_per_chamber=np.array([hits, 0, 0, 0]))
    ...     return message_from_arrays(a, DRIFT_EDGES_NS, {"window_id": 100 + i, "window_start": iso_utc(T + 2 * i),
    ...                                                    "window_end": iso_utc(T + 2 * i + 2)})
    >>> store = HistoryStore(tempfile.mkdtemp())
    >>> _ = store.append([window(i, 300 if i == 0 else 100) for i in range(-12, 2)])  # 300 hits just after T
    >>> ctx = AnalysisContext(store, artifacts_dir=tempfile.mkdtemp(), now=T + 60,
    ...                       params={"on_before_s": 4, "on_after_s": 4, "gap_s": 0, "background_s": 20})
    >>> alert = parse_notice(b'{"mission": "IceCube", "id": "7", "trigger_time": "2023-11-14T22:13:20Z"}')
    >>> s = rate_excess(alert, ctx).summary
    >>> s["on"]["windows"], s["background"]["windows"], s["chambers"][0]["on_counts"], s["chambers"][0]["expected"]
    (4, 10, 600, 400.0)
    >>> s["max_chamber"], round(s["max_significance_sigma"], 1), s["complete"]
    (0, 7.7, True)
    """
    p = ctx.params
    on_before, on_after, bg_len, gap = (float(p[k]) for k in ("on_before_s", "on_after_s", "background_s", "gap_s"))
    if min(on_before, on_after, bg_len, gap) < 0 or on_before + on_after <= 0 or bg_len <= 0:
        raise ValueError(f"rate_excess needs non-negative times and positive on/background lengths, got {p}")
    trig = alert.trigger_time
    if trig is None:
        return no_data("the alert has no trigger time")
    on0, on1 = trig - on_before, trig + on_after
    bg1 = on0 - gap
    bg0 = bg1 - bg_len
    ranges = {"on": [_iso(on0), _iso(on1)], "background": [_iso(bg0), _iso(bg1)]}
    ds = ctx.windows(bg0, on1)
    if ds is None:
        return no_data(f"no windows in the history store between {_iso(bg0)} and {_iso(on1)}",
                       trigger_time=_iso(trig), time_ranges=ranges)
    procs = _processors(ds)
    if p["processor"] is not None:
        chosen = str(p["processor"])
    else:
        names, counts = np.unique(procs, return_counts=True)
        chosen = str(names[np.argmax(counts)])
    ds = ds.isel(time=np.flatnonzero(procs == chosen))
    start, end = _seconds(ds.time.values), _seconds(ds.window_end.values)
    dur = np.nan_to_num(end - start, nan=0.0)
    bad = ds.bad.values if p["exclude_bad"] else np.zeros(ds.sizes["time"], bool)
    is_on = (dur > 0) & (end > on0) & (start < on1)
    is_bg = (dur > 0) & (start >= bg0) & (end <= bg1)
    use_on, use_bg = is_on & ~bad, is_bg & ~bad
    bad_iv = [[_iso(a), _iso(b)] for a, b in ctx.bad_intervals(bg0 - MAX_WINDOW_S, on1 + MAX_WINDOW_S)]
    info = {"trigger_time": _iso(trig), "processor": chosen, "time_ranges": ranges, "bad_intervals": bad_iv,
            "on_windows_bad": int((is_on & bad).sum()), "background_windows_bad": int((is_bg & bad).sum())}
    if not use_on.any():
        why = "all in bad periods" if is_on.any() else "none recorded yet" if on1 > ctx.now else "none recorded"
        return no_data(f"no usable windows in the on-window ({why})", **info)
    if not use_bg.any():
        why = "all in bad periods" if is_bg.any() else "none recorded"
        return no_data(f"no usable background windows ({why})", **info)

    counts = ds.hits_per_chamber.values.astype(np.int64)
    t_on, t_bg = float(dur[use_on].sum()), float(dur[use_bg].sum())
    alpha = t_on / t_bg
    n_on, n_bg = counts[use_on].sum(0), counts[use_bg].sum(0)
    stats = _excess_stats(n_on, n_bg, alpha, t_on, t_bg)
    total = _excess_stats(np.array([n_on.sum()]), np.array([n_bg.sum()]), alpha, t_on, t_bg)

    chamber = ds.chamber.values
    sel = is_on | is_bg
    rate = counts[sel] / dur[sel, None]
    data = xr.Dataset(
        {k: ("chamber", v, {"units": _UNITS[k]}) for k, v in stats.items()}
        | {f"total_{k}": ((), v[0], {"units": _UNITS[k]}) for k, v in total.items()}
        | {"rate_hz": (("time", "chamber"), rate, {"units": "Hz", "long_name": "hit rate per window"})},
        coords={"chamber": chamber, "time": ds.time.values[sel], "window_end": ("time", ds.window_end.values[sel]),
                "window_id": ("time", ds.window_id.values[sel]),
                "role": ("time", np.where(is_on[sel], "on", "background").astype(object)),
                "bad": ("time", ds.bad.values[sel]),
                "used": ("time", (use_on | use_bg)[sel])},
        attrs={"analysis": "rate_excess", "alert_id": alert.id, "trigger_time": _iso(trig),
               "on_start": ranges["on"][0], "on_end": ranges["on"][1], "background_start": ranges["background"][0],
               "background_end": ranges["background"][1], "on_exposure_s": t_on, "background_exposure_s": t_bg,
               "alpha": alpha, "processor": chosen,
               "significance": "Li & Ma (1983) eq. 17; p_value: Poisson P(N >= on_counts | expected)"},
    )  # fmt: skip
    i = int(np.argmax(stats["significance_sigma"]))
    on_ids, bg_ids = ds.window_id.values[use_on], ds.window_id.values[use_bg]
    summary = {
        "status": "ok", "alert_id": alert.id, **{k: info[k] for k in ("trigger_time", "processor")},
        "complete": bool(on1 <= ctx.now and t_on >= on_before + on_after - 1e-6),
        "max_significance_sigma": float(stats["significance_sigma"][i]), "max_chamber": int(chamber[i]),
        "min_p_value": float(stats["p_value"].min()),
        "total": {k: _num(v[0]) for k, v in total.items()},
        "chambers": [{"chamber": int(c), **{k: _num(v[j]) for k, v in stats.items()}} for j, c in enumerate(chamber)],
        "on": {"start": _iso(float(start[use_on].min())), "end": _iso(float(end[use_on].max())),
               "windows": int(use_on.sum()), "exposure_s": t_on, "bad_windows": info["on_windows_bad"]},
        "background": {"start": _iso(float(start[use_bg].min())), "end": _iso(float(end[use_bg].max())),
                       "windows": int(use_bg.sum()), "exposure_s": t_bg, "bad_windows": info["background_windows_bad"]},
        "bad_intervals": bad_iv,
    }  # fmt: skip
    provenance = {
        "time_ranges": ranges, "bad_intervals": bad_iv, "exclude_bad": bool(p["exclude_bad"]), "processor": chosen,
        "windows": {
            "on": {"count": len(on_ids), "window_ids": on_ids.tolist(),
                   "excluded_bad": ds.window_id.values[is_on & bad].tolist()},
            "background": {"count": len(bg_ids), "first_window": int(bg_ids.min()), "last_window": int(bg_ids.max()),
                           "excluded_bad": ds.window_id.values[is_bg & bad].tolist()},
        },
        # ledger inputs of the spans covered by the windows used (bad windows inside them are listed above)
        "inputs": {"on": ctx.inputs(float(start[use_on].min()), float(end[use_on].max()), chosen),
                   "background": ctx.inputs(float(start[use_bg].min()), float(end[use_bg].max()), chosen)},
    }  # fmt: skip
    return AnalysisResult(summary=summary, data=data, provenance=provenance)


_UNITS = {"on_counts": "1", "on_rate_hz": "Hz", "background_counts": "1", "background_rate_hz": "Hz",
          "expected": "1", "excess": "1", "significance_sigma": "sigma", "p_value": "1", "p_value_sigma": "sigma"}


def _excess_stats(n_on: np.ndarray, n_bg: np.ndarray, alpha: float, t_on: float, t_bg: float) -> dict:
    expected = alpha * n_bg
    log_p = [poisson_log_sf(int(k), float(m)) for k, m in zip(n_on, expected)]
    return {
        "on_counts": n_on, "on_rate_hz": n_on / t_on, "background_counts": n_bg, "background_rate_hz": n_bg / t_bg,
        "expected": expected, "excess": n_on - expected,
        "significance_sigma": np.atleast_1d(li_ma_significance(n_on, n_bg, alpha)),
        "p_value": np.exp(np.array(log_p)), "p_value_sigma": np.array([sigma_from_log_p(lp) for lp in log_p]),
    }  # fmt: skip


@analysis(name="snapshot", version="1", defaults={"before_s": 60.0, "after_s": 60.0, "exclude_bad": False})
def snapshot(alert: Alert, ctx: AnalysisContext) -> AnalysisResult:
    """The detector products of the windows overlapping [T - before_s, T + after_s) as a NetCDF file.

    Every window is kept (``bad`` says which overlap a bad period) unless ``exclude_bad``; the file's attrs
    hold ``provenance`` and ``alert`` as JSON strings.

    >>> import tempfile
    >>> from dtlive.alerts.notices import parse_notice
    >>> from dtlive.core.messages import iso_utc, message_from_arrays
    >>> from dtlive.core.products import DRIFT_EDGES_NS, REGISTRY
    >>> from dtlive.core.rows import Rows
    >>> arrays = REGISTRY.compute(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[1], bx=[0], tdc=[0]))
    >>> store = HistoryStore(tempfile.mkdtemp())
    >>> def window(i):  # the 2 s window starting 2 i seconds after 1.7e9
    ...     return message_from_arrays(arrays, DRIFT_EDGES_NS, {"window_id": i, "window_start": iso_utc(1.7e9 + 2 * i),
    ...                                                         "window_end": iso_utc(1.7e9 + 2 * i + 2)})
    >>> _ = store.append([window(i) for i in range(-5, 5)])
    >>> ctx = AnalysisContext(store, artifacts_dir=tempfile.mkdtemp(), params={"before_s": 4, "after_s": 4})
    >>> alert = parse_notice(b'{"mission": "IceCube", "id": "7", "trigger_time": "2023-11-14T22:13:20Z"}')
    >>> r = snapshot(alert, ctx)
    >>> r.summary["windows"], r.summary["total_hits"], r.artifacts[0].suffix, r.data.window_id.values.tolist()
    (4, 4, '.nc', [-2, -1, 0, 1])
    """
    p = ctx.params
    trig = alert.trigger_time
    if trig is None:
        return no_data("the alert has no trigger time")
    lo, hi = trig - float(p["before_s"]), trig + float(p["after_s"])
    if not hi > lo:
        raise ValueError(f"snapshot needs before_s + after_s > 0, got {p}")
    ranges = {"snapshot": [_iso(lo), _iso(hi)]}
    ds = ctx.windows(lo, hi)
    if ds is not None and p["exclude_bad"]:
        ds = ds.isel(time=np.flatnonzero(~ds.bad.values)) if (~ds.bad.values).any() else None
    if ds is None:
        return no_data(f"no windows in the history store between {_iso(lo)} and {_iso(hi)}",
                       trigger_time=_iso(trig), time_ranges=ranges)
    start, end = _seconds(ds.time.values), _seconds(ds.window_end.values)
    bad_iv = [[_iso(a), _iso(b)] for a, b in ctx.bad_intervals(float(start.min()), float(np.nanmax(end)))]
    provenance = {
        "time_ranges": ranges, "bad_intervals": bad_iv,
        "windows": {"count": int(ds.sizes["time"]), "window_ids": ds.window_id.values.tolist(),
                    "processors": sorted(set(_processors(ds).tolist())),
                    "bad": ds.window_id.values[ds.bad.values].tolist()},
        "inputs": ctx.inputs(float(start.min()), float(np.nanmax(end))),
    }  # fmt: skip
    path = ctx.artifact_path(_stem(alert, "snapshot") + ".nc")
    out = ds.copy()
    alert_d = alert_to_dict(alert)
    alert_d.pop("raw", None)
    out.attrs.update(analysis="snapshot", alert_id=alert.id, trigger_time=_iso(trig),
                     provenance=json.dumps(_jsonable({**ctx.run, **provenance})), alert=json.dumps(alert_d))
    tmp = _temporary(path)
    out.to_netcdf(tmp, engine="h5netcdf")
    os.replace(tmp, path)
    summary = {
        "status": "ok", "alert_id": alert.id, "trigger_time": _iso(trig), "file": str(path),
        "windows": int(ds.sizes["time"]), "bad_windows": int(ds.bad.values.sum()),
        "start": _iso(float(start.min())), "end": _iso(float(np.nanmax(end))),
        "total_hits": int(ds.total_hits.sum()), "hits_per_chamber": ds.hits_per_chamber.sum("time").values.tolist(),
    }  # fmt: skip
    return AnalysisResult(summary=summary, data=out, artifacts=[path], provenance=provenance)


@analysis(name="notebook", version="1", defaults={
    "notebook": None, "before_s": 300.0, "after_s": 60.0, "exclude_bad": True, "timeout_s": 300.0,
    "kernel": "python3", "parameters": {},
})  # fmt: skip
def notebook(alert: Alert, ctx: AnalysisContext) -> AnalysisResult:
    """Run a parameterised notebook with papermill; the executed notebook is the artifact.

    ``notebook``: its path (default :data:`TEMPLATE`, per-chamber rates around the trigger). Injected
    parameters: ``alert_id``, ``record_number``, ``mission``, ``instrument``, ``alert_type``, ``is_test``,
    ``trigger_time`` (UNIX s), ``trigger_time_iso``, ``alert`` (the alert as a dict, without its raw payload),
    ``start``/``end`` (T - before_s, T + after_s), ``history_path``, ``bad_intervals`` ([[a, b], ...] UNIX s,
    empty unless ``exclude_bad``), ``summary_path``/``data_path`` (where the notebook may leave a JSON
    summary and a NetCDF Dataset, taken into the result), plus ``parameters`` from the rule. ``timeout_s``
    bounds each cell; a failing or timed-out notebook gives status ``error`` (the executed notebook kept).

    >>> import tempfile
    >>> from dtlive.alerts.notices import parse_notice
    >>> ctx = AnalysisContext(HistoryStore(tempfile.mkdtemp()), artifacts_dir=tempfile.mkdtemp())
    >>> notebook(parse_notice(b'{"mission": "Swift", "id": "1"}'), ctx).summary  # nothing to run without a time
    {'status': 'no_data', 'reason': 'the alert has no trigger time'}
    >>> alert = parse_notice(b'{"mission": "IceCube", "id": "7", "trigger_time": "2024-05-01T12:00:00Z"}')
    >>> r = notebook(alert, ctx)  # runs alert_template.ipynb in a python3 kernel  # doctest: +SKIP
    >>> r.status, r.artifacts[0].suffix  # doctest: +SKIP
    ('ok', '.ipynb')
    """
    with extra("alerts", "the notebook analysis"):
        import nbformat
        import papermill

    p = ctx.params
    trig = alert.trigger_time
    if trig is None:
        return no_data("the alert has no trigger time")
    src = Path(p["notebook"]).expanduser() if p["notebook"] else TEMPLATE
    if not src.is_file():
        raise FileNotFoundError(f"notebook {src} not found")
    lo, hi = trig - float(p["before_s"]), trig + float(p["after_s"])
    bad = ctx.bad_intervals(lo - MAX_WINDOW_S, hi + MAX_WINDOW_S) if p["exclude_bad"] else []
    stem = _stem(alert, f"notebook-{src.stem}")
    out = ctx.artifact_path(stem + ".ipynb")
    summary_path, data_path = out.with_suffix(".summary.json"), out.with_suffix(".nc")
    for f in (summary_path, data_path):
        f.unlink(missing_ok=True)
    alert_d = alert_to_dict(alert)
    alert_d.pop("raw", None)
    params = _jsonable({
        "alert_id": alert.id, "record_number": alert.record_number, "mission": alert.mission,
        "instrument": alert.instrument, "alert_type": alert.type, "is_test": alert.is_test, "trigger_time": trig,
        "trigger_time_iso": _iso(trig), "alert": alert_d, "start": lo, "end": hi,
        "history_path": str(Path(ctx.history.path).resolve()), "bad_intervals": [list(b) for b in bad],
        "summary_path": str(summary_path.resolve()), "data_path": str(data_path.resolve()),
        **dict(p["parameters"] or {}),
    })  # fmt: skip
    provenance = {"notebook": str(src.resolve()), "kernel": p["kernel"],
                  "time_ranges": {"notebook": [_iso(lo), _iso(hi)]},
                  "bad_intervals": [[_iso(a), _iso(b)] for a, b in bad], "inputs": ctx.inputs(lo, hi)}
    summary: dict[str, Any] = {"status": "ok", "alert_id": alert.id, "notebook": str(src), "output": str(out)}
    meta = nbformat.read(src, as_version=4).metadata
    language = None if (meta.get("language_info", {}).get("name") or meta.get("kernelspec", {}).get("language")) \
        else "python"  # a notebook without language metadata: the kernel is python3 unless the rule says otherwise
    t0 = time.monotonic()
    running = _temporary(out).with_suffix(".tmp.ipynb")  # saved after each cell; its final name once it ran
    try:
        papermill.execute_notebook(str(src), str(running), parameters=params, kernel_name=p["kernel"],
                                   language=language, execution_timeout=float(p["timeout_s"]), progress_bar=False,
                                   cwd=str(ctx.artifacts_dir), request_save_on_cell_execute=True)
    except papermill.PapermillExecutionError as e:
        summary.update(status="error", reason=f"cell {e.cell_index}: {e.ename}: {e.evalue}"[:2000])
    except TimeoutError as e:  # nbclient's CellTimeoutError
        summary.update(status="error", reason=f"timeout after {p['timeout_s']} s per cell: {e}"[:2000])
    finally:
        if running.exists():
            os.replace(running, out)
    summary["duration_s"] = round(time.monotonic() - t0, 3)
    data = xr.Dataset()
    artifacts = [out] if out.exists() else []
    if summary_path.exists():
        try:
            summary["notebook_summary"] = json.loads(summary_path.read_text())
        except ValueError as e:
            summary["notebook_summary_error"] = str(e)
        artifacts.append(summary_path)
    if data_path.exists():
        with xr.open_dataset(data_path, engine="h5netcdf") as stored:
            data = stored.load()
        artifacts.append(data_path)
    return AnalysisResult(summary=summary, data=data, artifacts=artifacts, provenance=provenance)


# ---------------------------------------------------------------------------------------------- helpers


def _seconds(t: np.ndarray) -> np.ndarray:
    """datetime64 array -> float UNIX seconds (NaN for NaT)."""
    t = np.asarray(t).astype("datetime64[ms]")
    return np.where(np.isnat(t), np.nan, t.astype(np.int64) / 1000.0)


def _processors(ds: xr.Dataset) -> np.ndarray:
    """The processor of each window ("" when its provenance names none)."""
    cache: dict[str, str] = {}
    out = []
    for s in ds.provenance.values:
        if s not in cache:
            try:
                cache[s] = str(json.loads(s).get("processor") or "")
            except (ValueError, AttributeError):
                cache[s] = ""
        out.append(cache[s])
    return np.array(out, dtype=object)


def _iso(t: float | None) -> str | None:
    if t is None or (isinstance(t, float) and not math.isfinite(t)):
        return None
    return datetime.fromtimestamp(float(t), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(v) -> int | float | None:
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _temporary(path: Path) -> Path:
    """A unique hidden name next to ``path``: write there, then ``os.replace`` onto ``path`` (readers see whole files).

    >>> _temporary(Path("/a/b.nc")).name.startswith(".b.nc.")
    True
    """
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _stem(alert: Alert, what: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{alert.id}-r{alert.record_number}-{what}")


def _alert_brief(alert: Alert) -> dict:
    return {"id": alert.id, "record_number": alert.record_number, "mission": alert.mission,
            "instrument": alert.instrument, "type": alert.type, "tense": alert.tense, "topic": alert.topic,
            "trigger_time": alert.trigger_time, "trigger_time_iso": _iso(alert.trigger_time)}


@functools.lru_cache(maxsize=1)
def _code_version() -> dict:
    import dtlive
    from dtlive.storage.ledger import source_git_commit

    return {"dtlive_version": dtlive.__version__, "git_commit": source_git_commit()}


def _jsonable(x: Any) -> Any:
    """Plain JSON types (datetimes as ISO UTC, numpy scalars as numbers, NaN/inf as None, paths as str)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | set | frozenset):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, bool) or x is None or isinstance(x, int | str):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, datetime):
        x = x if x.tzinfo else x.replace(tzinfo=UTC)
        return x.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(x, date):
        return x.isoformat()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    return str(x)
