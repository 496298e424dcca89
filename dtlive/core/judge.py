"""Automatic quality tests of window results against a reference, and a status per chamber. Pure: no I/O
besides reading the TOML configuration.

The tests (:mod:`dtlive.core.checks`) are configured in TOML (:func:`load_tests_config`; the defaults ship
as ``quality_tests.toml`` next to this module and cover every window product): each ``[[tests]]`` entry
names a ``kind``, the products it applies to (``fnmatch`` patterns of Dataset variable names) and its
parameters; ``[defaults]`` holds parameters every test gets; ``[masks]`` the known-bad channels of each
chamber; ``[status]`` how results make a chamber status.

:func:`judge` runs the tests on one window or on the sum of several (a lumi block; see
:func:`dtlive.core.references.accumulate`) and returns a JSON-ready ``dtlive.quality/2`` dict;
:func:`judge_blocks` does that for consecutive blocks of N windows of a stacked Dataset.

A chamber's status (:func:`chamber_status`) is 0 (ok) .. 4 (bad), the worst of: the level of each test
at ``warning``/``error`` (``[status]`` ``warning``/``error``, or a test's own ``error_status``), and the
level of the fraction of its 64 channels that work (not dead, not noisy, not masked) from
``working_fraction``. It is None when no test had enough statistics. Each level comes with its reason.

These tests compare with a reference; :mod:`dtlive.core.quality` flags periods (gaps, silent chambers,
noisy channels, rate jumps) from the stream alone.

>>> from dtlive.core.products import compute_products
>>> from dtlive.core.references import make_reference
>>> from dtlive.core.rows import Rows
>>> rng = np.random.default_rng(1)
>>> def window(i, dead=()):
...     channel = rng.integers(0, 128, 5000)
...     channel = channel[~np.isin(channel, dead)]
...     n = len(channel)
...     ds = compute_products(Rows.from_columns(head=[2] * n, fpga=[0] * n, channel=channel,
...                                             orbit=rng.integers(0, 22446, n) + 22446 * i, bx=[0] * n, tdc=[0] * n))
...     ds.attrs.update(window_id=i, first_orbit=22446 * i, last_orbit=22446 * i + 22445)
...     return ds
>>> ref = make_reference([window(i) for i in range(5)], label="flat")
>>> out = judge(window(9, dead=[70]), ref)
>>> out["schema"], out["chambers"]["chamber_0"]["status"], out["chambers"]["chamber_1"]["status"]
('dtlive.quality/2', 0, 1)
>>> out["chambers"]["chamber_1"]["reasons"], out["chambers"]["chamber_1"]["bad_channels"]
(['dead_channels (channel_occupancy): 1 dead channel(s) of 64 judged: channel 6'], [6])
>>> out["chambers"]["chamber_2"]["status"], out["chambers"]["chamber_2"]["reasons"]  # no hits at all
(4, ['chamber_rate_hz (hits_per_chamber): rate 0 Hz outside [1.0, 100000.0]'])
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import xarray as xr

from dtlive.core import detector as det
from dtlive.core.checks import ERROR, KINDS, NES, OK, WARNING, Context, Outcome
from dtlive.core.messages import QUALITY_TESTS_SCHEMA
from dtlive.core.references import ACCUMULATION_KIND, accumulate, check_bins, exposure_s

DEFAULT_CONFIG = "quality_tests.toml"
Masks = Mapping[int, Iterable[int]]


@dataclass(frozen=True)
class CheckSpec:
    """One configured test: its name, kind, product patterns, parameters and the chamber status of its error.

    >>> spec = load_tests_config('[[tests]]\\nname = "shape"\\nkind = "chi2"\\nproducts = ["*_occupancy"]').tests[0]
    >>> spec.kind, spec.matches("channel_occupancy"), spec.matches("drift_time_ns"), spec.params["p_value"]
    ('chi2', True, False, 1e-06)
    """

    name: str
    kind: str
    products: tuple[str, ...]
    params: dict = field(default_factory=dict, hash=False)
    error_status: int | None = None

    def matches(self, variable: str) -> bool:
        return any(fnmatch.fnmatchcase(variable, p) for p in self.products)


@dataclass(frozen=True)
class StatusRules:
    """How test results make a chamber status (see the module docstring).

    >>> rules = StatusRules(error=3)  # a test at error makes the chamber "poor", not "degraded"
    >>> failed = Result("rate", "range", "hits_per_chamber", 1, Outcome("error", 0.0, "rate 0 Hz", {}), rules.error)
    >>> s = chamber_status([failed], rules, chambers=[1])[1]
    >>> s["status"], s["label"]
    (3, 'poor')
    """

    labels: tuple[str, ...] = ("ok", "minor", "degraded", "poor", "bad")
    warning: int = 1
    error: int = 2
    working_fraction: tuple[tuple[float, int], ...] = ((0.95, 1), (0.85, 2), (0.7, 3), (0.5, 4))


@dataclass(frozen=True)
class ChecksConfig:
    """The tests, the status rules, the masks (chamber -> channels) and a hash of the TOML text.

    >>> cfg = load_tests_config('[masks]\\n"2" = [17, 40]\\n[[tests]]\\nname = "x"\\nkind = "dead"\\nproducts = ["c*"]')
    >>> [t.name for t in cfg.tests], cfg.masks, cfg.status.warning, len(cfg.hash)
    (['x'], {2: (17, 40)}, 1, 12)
    """

    tests: tuple[CheckSpec, ...]
    status: StatusRules
    masks: dict = field(default_factory=dict, hash=False)
    hash: str = ""


@dataclass
class Result:
    """One test's verdict on one product of one chamber (``chamber`` None: a detector-wide product).

    >>> r = Result("rate", "range", "hits_per_chamber", 0, Outcome("warning", float("nan"), "rate low", {"n": 3}), 1)
    >>> d = r.to_dict()
    >>> r.status, d["test"], d["status"], d["score"], d["details"]  # JSON-ready: the NaN score is None
    ('warning', 'rate', 'warning', None, {'n': 3})
    """

    test: str
    kind: str
    product: str
    chamber: int | None
    outcome: Outcome
    level: int  # the chamber status this result asks for

    @property
    def status(self) -> str:
        return self.outcome.status

    def to_dict(self) -> dict:
        """JSON-ready (NaN scores become None)."""
        o = self.outcome
        return {"test": self.test, "kind": self.kind, "product": self.product, "status": o.status,
                "score": _num(o.score), "reason": o.reason, "details": _clean(o.details)}


def load_tests_config(source: str | os.PathLike | None = None) -> ChecksConfig:
    """The tests configuration from TOML text (a ``str``), a file (a path) or the packaged defaults (None).

    >>> cfg = load_tests_config()
    >>> sorted({t.kind for t in cfg.tests}), cfg.status.labels[4]
    (['chi2', 'dead', 'ks', 'mean_width', 'noisy', 'range', 'timebox'], 'bad')
    >>> cfg = load_tests_config('[masks]\\n"1" = [6]\\n[[tests]]\\nname = "x"\\nkind = "dead"\\nproducts = ["c*"]')
    >>> cfg.masks, cfg.tests[0].params["p_value"]
    ({1: (6,)}, 1e-06)
    >>> load_tests_config('[[tests]]\\nname = "x"\\nkind = "magic"\\nproducts = ["*"]')
    Traceback (most recent call last):
    ...
    ValueError: test 'x': unknown kind 'magic' (known: chi2, ks, range, dead, noisy, mean_width, timebox)
    """
    if source is None:
        text = resources.files("dtlive.core").joinpath(DEFAULT_CONFIG).read_text()
    elif isinstance(source, str):
        text = source
    else:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    raw = tomllib.loads(text)
    defaults = {"p_value": 1e-6, **raw.get("defaults", {})}
    tests, names = [], set()
    for t in raw.get("tests", []):
        t = dict(t)
        name, kind = t.pop("name", None), t.pop("kind", None)
        if not name or name in names:
            raise ValueError(f"every test needs a distinct name: {name!r}")
        if kind not in KINDS:
            raise ValueError(f"test {name!r}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
        products = t.pop("products", None)
        if not products:
            raise ValueError(f"test {name!r}: no products")
        names.add(name)
        err = t.pop("error_status", None)
        tests.append(CheckSpec(name, kind, tuple([products] if isinstance(products, str) else products),
                              {**defaults, **t}, None if err is None else int(err)))
    st = raw.get("status", {})
    base = StatusRules()
    rules = StatusRules(tuple(st.get("labels", base.labels)), int(st.get("warning", base.warning)),
                        int(st.get("error", base.error)),
                        tuple((float(f), int(s)) for f, s in st.get("working_fraction", base.working_fraction)))
    masks = {int(c): tuple(int(x) for x in chans) for c, chans in raw.get("masks", {}).items()}
    return ChecksConfig(tuple(tests), rules, masks, hashlib.sha256(text.encode()).hexdigest()[:12])


def run_tests(acc: xr.Dataset, reference: xr.Dataset | None, config: ChecksConfig, masks: Masks | None = None
              ) -> list[Result]:
    """Every configured test on every product it matches, per chamber, of one accumulation (or window).

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> w = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
    >>> cfg = load_tests_config('[[tests]]\\nname = "rate"\\nkind = "range"\\nproducts = ["hits_*"]\\nerror = [0, 0]')
    >>> [(r.chamber, r.status, r.outcome.reason) for r in run_tests(w, None, cfg)][:2]
    [(0, 'error', 'sum 1 entries outside [0, 0]'), (1, 'ok', 'sum 0 entries within bounds')]

    A product whose shape does not fit the kind (a number where a histogram is needed, or a histogram
    with more than one axis) is skipped. Tests that need a reference give ``not_enough_statistics`` without one;
    a reference binned otherwise than the windows (another drift-time binning) raises ValueError.
    """
    mask_of = _masks(config.masks, masks)
    if reference is not None:
        check_bins(acc, reference)
    seconds, ref_seconds = exposure_s(acc), exposure_s(reference) if reference is not None else math.nan
    if np.isfinite(seconds) and np.isfinite(ref_seconds):
        scale = seconds / ref_seconds
    elif reference is not None and "total_hits" in acc and float(reference["total_hits"]) > 0:
        scale = float(acc["total_hits"]) / float(reference["total_hits"])
    else:
        scale = math.nan
    out = []
    for spec in config.tests:
        test, needs_ref, needs_axis = KINDS[spec.kind]
        for var in [v for v in acc.data_vars if spec.matches(str(v))]:
            da = acc[var]
            per_chamber = "chamber" in da.dims
            axes = [d for d in da.dims if d != "chamber"]
            if len(axes) > 1 or (needs_axis and not axes):
                continue
            axis = axes[0] if axes else None
            centres = (acc[axis].values.astype(float) if axis in acc.coords else np.arange(da.sizes[axis], dtype=float)
                       ) if axis else np.zeros(1)
            ref = reference[var] if reference is not None and var in reference else None
            values, rvalues = _by_chamber(da), None if ref is None else _by_chamber(ref)
            for c in (range(da.sizes["chamber"]) if per_chamber else [None]):
                obs = np.atleast_1d(values[c] if c is not None else values)
                r = None if rvalues is None else np.atleast_1d(rvalues[c] if c is not None else rvalues)
                mask = np.zeros(obs.shape, bool)
                if axis == "channel" and c is not None:
                    mask[[ch for ch in mask_of.get(c, ()) if 0 <= ch < len(mask)]] = True
                ctx = Context(centres, mask, scale, seconds, channel_axis=axis == "channel")
                outcome = (Outcome(NES, math.nan, "no reference for this product") if needs_ref and r is None
                           else test(obs, r, ctx, spec.params))
                level = {OK: 0, NES: 0, WARNING: config.status.warning,
                         ERROR: spec.error_status if spec.error_status is not None else config.status.error}
                out.append(Result(spec.name, spec.kind, str(var), c, outcome, level[outcome.status]))
    return out


def chamber_status(results: list[Result], rules: StatusRules = StatusRules(), masks: Masks | None = None,
                   chambers: Iterable[int] = det.CHAMBERS) -> dict[int, dict]:
    """Status 0 (ok) .. 4 (bad) of each chamber from the tests' results, with the reasons behind it.

    Returns ``{chamber: {"status", "label", "reasons", "working_fraction", "bad_channels"}}``; ``status``
    is None when none of the chamber's tests had enough statistics. The channels that do not work are the
    masked ones and those a judged test lists as ``bad_channels`` (dead, noisy) or ``reference_empty``.

    >>> from dtlive.core.checks import Outcome
    >>> dead = Result("dead_channels", "dead", "channel_occupancy", 0,
    ...               Outcome("error", 40.0, "40 dead", {"bad_channels": list(range(40))}), 2)
    >>> s = chamber_status([dead], chambers=[0])[0]
    >>> s["status"], s["label"], s["working_fraction"], s["reasons"][1]
    (4, 'bad', 0.375, 'working channels 24/64 (38%), below 50%')
    """
    mask_of = _masks({}, masks)
    out = {}
    for c in chambers:
        c = int(c)
        mine = [r for r in results if r.chamber == c]
        judged = [r for r in mine if r.status != NES]
        bad = set(mask_of.get(c, ()))
        for r in judged:  # dead or noisy now, or without a single entry in the reference
            bad |= set(r.outcome.details.get("bad_channels", ())) | set(r.outcome.details.get("reference_empty", ()))
        n = det.CHANNELS_PER_CHAMBER
        fraction = 1.0 - len(bad) / n
        if not judged:
            out[c] = {"status": None, "label": "not_enough_statistics", "reasons": ["no test had enough statistics"],
                      "working_fraction": round(fraction, 4), "bad_channels": sorted(bad)}
            continue
        level, reasons = 0, []
        for r in judged:
            if r.level > 0:
                level = max(level, r.level)
                reasons.append(f"{r.test} ({r.product}): {r.outcome.reason}")
        below = [(f, s) for f, s in rules.working_fraction if fraction < f]
        if below:
            f, s = max(below, key=lambda x: x[1])
            level = max(level, s)
            reasons.append(f"working channels {n - len(bad)}/{n} ({fraction:.0%}), below {f:.0%}")
        level = min(level, len(rules.labels) - 1)
        out[c] = {"status": level, "label": rules.labels[level], "reasons": reasons,
                  "working_fraction": round(fraction, 4), "bad_channels": sorted(bad)}
    return out


def judge(windows: xr.Dataset | list[xr.Dataset], reference: xr.Dataset | None,
          config: ChecksConfig | str | os.PathLike | None = None, masks: Masks | None = None) -> dict:
    """The ``dtlive.quality/2`` verdict (JSON-ready dict) of one window or the sum of several.

    ``windows``: a window's Dataset, a stacked one (all its windows summed), a list, or an accumulation
    from :func:`~dtlive.core.references.accumulate`; ``config``: a :class:`ChecksConfig`, TOML text, a TOML
    file or None (the packaged defaults); ``masks``: known-bad channels (chamber -> local channels) added to
    the configuration's. The verdict::

        {"schema": "dtlive.quality/2",
         "status": worst status 0..4 of the chambers and the detector-wide tests (None: nothing judged),
         "windows": {"count", "ids": [first, last], "start", "end", "seconds"},
         "reference": {"label", "created", "windows", "first_start", "last_end", "seconds", "detector",
                       "window_ids": [first, last]},
         "config": {"hash": of the TOML text, "masks": {"chamber": [channels]}},
         "chambers": {"chamber_0": {"status", "label", "reasons": [...], "working_fraction",
                                    "bad_channels": [...],
                                    "tests": [{"test", "kind", "product", "status", "score", "reason",
                                               "details"}, ...]}, ...},
         "detector": {"status", "reasons", "tests": [...]}}   # tests of products without a chamber

    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> w = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
    >>> v = judge(w, None)
    >>> v["schema"], v["windows"]["count"], v["chambers"]["chamber_0"]["tests"][0]["status"]
    ('dtlive.quality/2', 1, 'not_enough_statistics')
    """
    cfg = config if isinstance(config, ChecksConfig) else load_tests_config(config)
    acc = (windows if isinstance(windows, xr.Dataset) and windows.attrs.get("kind") == ACCUMULATION_KIND
           else accumulate(windows))
    results = run_tests(acc, reference, cfg, masks)
    all_masks = {c: sorted(v) for c, v in _masks(cfg.masks, masks).items()}
    statuses = chamber_status(results, cfg.status, all_masks,
                              acc["chamber"].values if "chamber" in acc.coords else det.CHAMBERS)
    chambers = {}
    for c, st in statuses.items():
        chambers[f"chamber_{c}"] = {**st, "tests": [r.to_dict() for r in results if r.chamber == c]}
    wide = [r for r in results if r.chamber is None]
    wide_level = max((r.level for r in wide if r.status != NES), default=None)
    known = [s["status"] for s in statuses.values() if s["status"] is not None]
    known += [min(wide_level, len(cfg.status.labels) - 1)] if wide_level is not None else []
    a = acc.attrs
    ref = reference.attrs if reference is not None else {}
    return _clean({
        "schema": QUALITY_TESTS_SCHEMA,
        "status": max(known) if known else None,
        "windows": {"count": a.get("windows", 0), "ids": _ids(a.get("window_ids")),
                    "start": a.get("first_start") or None, "end": a.get("last_end") or None,
                    "seconds": exposure_s(acc)},
        "reference": {k: ref.get(k) for k in ("label", "created", "windows", "first_start", "last_end")} | {
            "seconds": exposure_s(reference) if reference is not None else None,
            "detector": _json(ref.get("detector")), "window_ids": _ids(ref.get("window_ids"))},
        "config": {"hash": cfg.hash, "masks": {str(c): list(v) for c, v in all_masks.items()}},
        "chambers": chambers,
        "detector": {"status": wide_level, "reasons": [f"{r.test} ({r.product}): {r.outcome.reason}"
                                                        for r in wide if r.level > 0],
                     "tests": [r.to_dict() for r in wide]},
    })


def judge_blocks(windows: xr.Dataset, reference: xr.Dataset | None, block: int = 1,
                 config: ChecksConfig | str | os.PathLike | None = None, masks: Masks | None = None) -> list[dict]:
    """The verdicts of consecutive blocks of ``block`` windows of a stacked Dataset (a last partial block is
    left out: it waits for its windows).

    >>> from dtlive.core.messages import decode_message, encode_message, to_dataset
    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> def message(i):
    ...     ds = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[i], bx=[0], tdc=[0]))
    ...     ds.attrs.update(window_id=i, first_orbit=100 * i, last_orbit=100 * i + 99)
    ...     return decode_message(encode_message(ds))
    >>> stacked = to_dataset([message(i) for i in range(5)])
    >>> [v["windows"]["ids"] for v in judge_blocks(stacked, None, block=2)]
    [[0, 1], [2, 3]]
    """
    cfg = config if isinstance(config, ChecksConfig) else load_tests_config(config)
    n = windows.sizes["time"] // block
    return [judge(windows.isel(time=slice(i * block, (i + 1) * block)), reference, cfg, masks) for i in range(n)]


def _by_chamber(da: xr.DataArray) -> np.ndarray:
    """The values with the chamber axis first (numpy indexing: much cheaper than ``isel`` per chamber)."""
    return np.moveaxis(da.values, da.dims.index("chamber"), 0) if "chamber" in da.dims else da.values


def _masks(base: Masks, extra: Masks | None) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {int(c): set(map(int, v)) for c, v in base.items()}
    for c, v in (extra or {}).items():
        out.setdefault(int(c), set()).update(map(int, v))
    return out


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _clean(d):
    """JSON-ready copy: numpy scalars and arrays as Python numbers and lists, NaN as None."""
    if isinstance(d, dict):
        return {str(k): _clean(v) for k, v in d.items()}
    if isinstance(d, list | tuple | np.ndarray):
        return [_clean(v) for v in d]
    if isinstance(d, float | np.floating):
        return _num(d)
    if isinstance(d, np.integer | np.bool_):
        return d.item()
    if isinstance(d, np.str_):
        return str(d)
    return d


def _ids(value) -> list[int]:
    import json

    ids = json.loads(value) if value else []
    return [ids[0], ids[-1]] if ids else []


def _json(value) -> dict:
    import json

    try:
        return json.loads(value) if value else {}
    except ValueError:
        return {}
