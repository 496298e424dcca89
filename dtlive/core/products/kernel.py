"""The protocol of a window product and the driver that runs a registry of them.

Every product is a mergeable accumulator (:class:`Product`). A window's hits may be spread over several
shares (the partitions read by different Dask workers, the pieces of replayed files); a :class:`Registry`
runs every product through the same exchange whether there is one share or many:

1. :meth:`~Registry.share`: each share summarises its hits (:class:`Partial`, small: it goes to whoever
   merges) and keeps what a second round may need (:data:`Kept`: it stays with the share);
2. :meth:`~Registry.plan_requests`: from all the summaries, what each share must answer (only products
   whose merge needs more than the summaries ask anything);
3. :meth:`~Registry.answer`: each share answers its request from what it kept;
4. :meth:`~Registry.merge`: summaries and answers -> plain numpy arrays, exactly those of all the hits at
   once;
5. :meth:`~Registry.finish`: the arrays as a labelled ``xarray.Dataset``.

A single process runs the five steps on one share (:meth:`Registry.compute`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # imported where a Dataset is made, so that importing this module stays light
    import xarray as xr

from dtlive.config import Config
from dtlive.core import detector as det
from dtlive.core.rows import Rows

NCH = det.CHANNELS_PER_CHAMBER
NCHAMB = det.N_CHAMBERS
N_CELLS = NCHAMB * NCH  # cell = chamber * 64 + local channel
CELL_BITS = 6  # cell >> CELL_BITS == chamber
assert 1 << CELL_BITS == NCH


def drift_edges(min_ns: float, max_ns: float, bin_ns: float) -> np.ndarray:
    """Drift-time bin edges (ns) from ``min_ns`` in steps of ``bin_ns`` up to ``max_ns``.

    >>> drift_edges(-10, 10, 5).tolist()
    [-10.0, -5.0, 0.0, 5.0, 10.0]
    """
    n = int(round((max_ns - min_ns) / bin_ns))
    return np.linspace(min_ns, min_ns + n * bin_ns, n + 1)


_DEFAULTS = Config()
DRIFT_EDGES_NS = drift_edges(_DEFAULTS.drift_min_ns, _DEFAULTS.drift_max_ns, _DEFAULTS.drift_bin_ns)  # the defaults

Variable = tuple[tuple[str, ...], dict]  # a Dataset variable's dims and attrs
Kept = dict[str, Any]  # product name -> what one share keeps for its answer
Request = dict[str, Any]  # product name -> what one share must answer
Answer = dict[str, Any]  # product name -> the share's answer


@dataclass(frozen=True, eq=False)
class Settings:
    """The products' settings: the drift-time bin edges (ns, increasing), and whether the reconstruction
    products (muon events, t0s, time boxes, segments) are computed or left empty.

    >>> Settings([0, 10, 20]).drift_edges.dtype, len(Settings().drift_edges), Settings().reconstruction
    (dtype('float64'), 121, True)
    """

    drift_edges: np.ndarray = field(default_factory=lambda: DRIFT_EDGES_NS)
    reconstruction: bool = True

    def __post_init__(self):
        object.__setattr__(self, "drift_edges", np.asarray(self.drift_edges, float))

    @classmethod
    def from_config(cls, cfg) -> Settings:
        """The settings of a :class:`dtlive.config.Config` (``drift_min_ns``, ``drift_max_ns``, ``drift_bin_ns``).

        >>> from dtlive.config import load_config
        >>> Settings.from_config(load_config({"drift_max_ns": 100}, env={})).drift_edges[[0, -1]].tolist()
        [-100.0, 100.0]
        """
        return cls(drift_edges(cfg.drift_min_ns, cfg.drift_max_ns, cfg.drift_bin_ns),
                   reconstruction=getattr(cfg, "reconstruction", True))


DEFAULT_SETTINGS = Settings()


class Hits:
    """One share's cleansed hits and the derived columns every product uses, computed once.

    ``chamber_rows``: the rows of the chamber hits (channels 0-127; ``slice(None)`` when every hit is one),
    ``cell``: ``chamber * 64 + local channel`` and ``orbit`` of each chamber hit.

    >>> h = Hits(Rows.from_columns(head=[2, 2], fpga=[1, 1], channel=[70, 128], orbit=[4, 4], bx=[2, 0], tdc=[3, 0]))
    >>> h.cell.tolist(), h.orbit.tolist(), h.chamber_rows.tolist()
    ([198], [4], [0])
    """

    def __init__(self, rows: Rows):
        self.rows = rows
        inside = rows.channel < det.CHAMBER_CHANNELS
        self.chamber_rows: slice | np.ndarray = slice(None) if inside.all() else np.flatnonzero(inside)
        self.cell = (rows.fpga * det.CHAMBER_CHANNELS + rows.channel)[self.chamber_rows]
        self.orbit = rows.orbit[self.chamber_rows]


class Product(ABC):
    """One window product (or a few computed together) as a mergeable accumulator.

    A product names its Dataset ``variables`` (dims and attrs, in message order) and the ``counts`` it
    adds to the window's message but not to the Dataset, and implements :meth:`share` and :meth:`merge`.
    One whose merge needs more than the shares' summaries also implements :meth:`requests` and
    :meth:`answer`. Whatever the split of a window's hits into shares, the merge must equal the merge of
    the one share of all of them, exactly.

    >>> class Orbits(Product):  # the number of distinct orbits with a chamber hit, one share at a time
    ...     name = "orbits"
    ...     variables = {"orbits": ((), {"units": "1"})}
    ...     def share(self, hits, settings):
    ...         return np.unique(hits.orbit), None
    ...     def merge(self, summaries, answers, settings):
    ...         return {"orbits": np.int64(len(np.unique(np.concatenate(summaries))))}
    >>> rows = Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 1], channel=[1, 2, 3], orbit=[5, 5, 6], bx=[0, 0, 0],
    ...                          tdc=[0, 0, 0])
    >>> int(Registry([Orbits()]).combine([rows.select(np.array([0, 1])), rows.select(np.array([1, 2]))])["orbits"])
    2
    """

    name: ClassVar[str]
    variables: ClassVar[dict[str, Variable]]
    counts: ClassVar[tuple[str, ...]] = ()
    reconstruction: ClassVar[bool] = False  # True: a product of the muon reconstruction, all 0 when it is off

    @abstractmethod
    def share(self, hits: Hits, settings: Settings) -> tuple[Any, Any]:
        """(summary, kept) of one share: the summary goes to the merge, ``kept`` stays for :meth:`answer`."""

    def requests(self, summaries: Mapping[int, Any], settings: Settings) -> dict[int, Any]:
        """What each share must answer, from every share's summary (by share id; default: nothing)."""
        return {}

    def answer(self, kept: Any, request: Any, settings: Settings) -> Any:
        """One share's answer to its request, from what it kept."""
        raise NotImplementedError(f"{self.name} asks no questions")

    @abstractmethod
    def merge(self, summaries: Sequence[Any], answers: Sequence[Any], settings: Settings) -> dict[str, np.ndarray]:
        """The arrays of ``variables`` and ``counts`` from every share's summary and every answer given."""

    def coords(self, settings: Settings) -> dict:
        """The Dataset coordinates the variables use."""
        return {}

    def finish(self, arrays: Mapping[str, np.ndarray], settings: Settings) -> dict:
        """The Dataset variables (``name: (dims, values, attrs)``) of merged arrays."""
        return {k: (dims, np.asarray(arrays[k]), attrs) for k, (dims, attrs) in self.variables.items()}


@dataclass
class Partial:
    """What one share of a window sends to the merge: its number of hits and every product's summary.

    >>> from dtlive.core.products import REGISTRY
    >>> partial, kept = REGISTRY.share(Rows.from_columns(head=[2], fpga=[0], channel=[1], orbit=[5], bx=[0], tdc=[0]))
    >>> partial.hits, partial.summaries["counts"][0], len(partial.summaries) == len(REGISTRY.products)
    (1, 1, True)
    """

    hits: int
    summaries: dict[str, Any]


class Registry:
    """Products run together through the share -> request -> answer -> merge -> finish exchange.

    >>> from dtlive.core.products import REGISTRY
    >>> a = Rows.from_columns(head=[2, 2], fpga=[0, 1], channel=[1, 128], orbit=[5, 5], bx=[10, 0], tdc=[0, 0])
    >>> b = Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[2, 1], orbit=[5, 5], bx=[12, 11], tdc=[0, 0])
    >>> (pa, ka), (pb, kb) = REGISTRY.share(a), REGISTRY.share(b)
    >>> requests = REGISTRY.plan_requests({0: pa, 1: pb})  # chamber 0 in both; a scintillator in a
    >>> answers = [REGISTRY.answer(k, requests[i]) for i, k in enumerate((ka, kb))]
    >>> merged = REGISTRY.merge([pa, pb], answers)
    >>> int(merged["active_channels_per_orbit"][0, 1]), int(merged["drift_time_ns"].sum())  # orbit 5: 2 channels
    (1, 3)
    >>> whole = REGISTRY.compute(Rows.concat([a, b]))
    >>> all((merged[k] == whole[k]).all() for k in whole)
    True
    """

    def __init__(self, products: Iterable[Product]):
        self.products = tuple(products)
        names = [p.name for p in self.products]
        outputs = [k for p in self.products for k in (*p.variables, *p.counts)]
        if len(set(names)) != len(names) or len(set(outputs)) != len(outputs):
            raise ValueError(f"products and their outputs need distinct names: {names}, {outputs}")
        self._by_name = dict(zip(names, self.products))
        self._counting = tuple(p for p in self.products if not p.reconstruction)

    @property
    def variables(self) -> tuple[str, ...]:
        """The Dataset variables of all products, in order."""
        return tuple(k for p in self.products for k in p.variables)

    @property
    def attrs(self) -> dict[str, dict]:
        """The attrs of each Dataset variable."""
        return {k: attrs for p in self.products for k, (_, attrs) in p.variables.items()}

    def running(self, settings: Settings = DEFAULT_SETTINGS) -> tuple[Product, ...]:
        """The products that run under ``settings``: all but the reconstruction's when it is switched off.

        Their arrays are left out of :meth:`merge` (a message leaves them out too); :meth:`finish` gives them as 0.

        >>> from dtlive.core.products import REGISTRY
        >>> len(REGISTRY.running(Settings(reconstruction=False))) < len(REGISTRY.running()) == len(REGISTRY.products)
        True
        """
        return self.products if settings.reconstruction else self._counting

    def share(self, hits: Rows, settings: Settings = DEFAULT_SETTINGS) -> tuple[Partial, Kept]:
        """Every running product's summary of one share of a window's cleansed hits, and what the share keeps."""
        view = Hits(hits)
        summaries, kept = {}, {}
        for p in self.running(settings):
            summaries[p.name], kept[p.name] = p.share(view, settings)
        return Partial(len(hits), summaries), kept

    def plan_requests(self, partials: Mapping[int, Partial], settings: Settings = DEFAULT_SETTINGS
                      ) -> dict[int, Request]:
        """What each share (by id) must answer before the merge; shares with nothing to add get no request."""
        out: dict[int, Request] = {}
        for p in self.running(settings):
            for i, r in p.requests({i: s.summaries[p.name] for i, s in partials.items()}, settings).items():
                out.setdefault(i, {})[p.name] = r
        return out

    def answer(self, kept: Kept, request: Request, settings: Settings = DEFAULT_SETTINGS) -> Answer:
        """One share's answer to its request, from what it kept."""
        return {name: self._by_name[name].answer(kept[name], r, settings) for name, r in request.items()}

    def merge(self, partials: Sequence[Partial], answers: Sequence[Answer] = (),
              settings: Settings = DEFAULT_SETTINGS) -> dict[str, np.ndarray]:
        """The window's arrays from every share's :class:`Partial` and every :meth:`answer` requested."""
        out: dict[str, np.ndarray] = {}
        for p in self.running(settings):
            out.update(p.merge([s.summaries[p.name] for s in partials], [a[p.name] for a in answers if p.name in a],
                               settings))
        return out

    def finish(self, arrays: Mapping[str, np.ndarray], settings: Settings = DEFAULT_SETTINGS,
               attrs: dict | None = None) -> xr.Dataset:
        """The merged arrays as a labelled Dataset (dims, coordinates, units in attrs); a product that did not
        run (see :meth:`running`) is all 0."""
        data_vars: dict = {}
        coords: dict = {}
        for p in self.products:
            if any(k not in arrays for k in p.variables):
                arrays = {**Registry([p]).compute(Rows.empty(), Settings(settings.drift_edges)), **arrays}
            data_vars.update(p.finish(arrays, settings))
            coords.update(p.coords(settings))
        import xarray as xr

        return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs or {}))

    def combine(self, parts: Sequence[Rows], settings: Settings = DEFAULT_SETTINGS) -> dict[str, np.ndarray]:
        """The arrays of the hits of all ``parts`` by the whole exchange, in one process."""
        shares = [self.share(part, settings) for part in parts]
        requests = self.plan_requests({i: partial for i, (partial, _) in enumerate(shares)}, settings)
        answers = [self.answer(shares[i][1], r, settings) for i, r in requests.items()]
        return self.merge([partial for partial, _ in shares], answers, settings)

    def compute(self, hits: Rows, settings: Settings = DEFAULT_SETTINGS) -> dict[str, np.ndarray]:
        """The arrays of one window's hits: the exchange on a single share."""
        return self.combine([hits], settings)


def drift_time_coords(settings: Settings) -> dict:
    """Coordinates of per-chamber drift-time histograms: the chamber's, the bin centres and the bin edges (ns).

    >>> coords = drift_time_coords(Settings([0.0, 10.0, 20.0]))
    >>> coords["drift_time"][1].tolist(), coords["drift_time"][2]["units"]
    ([5.0, 15.0], 'ns')
    """
    edges = settings.drift_edges
    return {
        **chamber_coords(),
        "drift_time": ("drift_time", (edges[:-1] + edges[1:]) / 2,
                       {"units": "ns", "long_name": "drift time (bin centre)"}),
        "drift_time_edges": ("drift_time_edge", edges, {"units": "ns"}),
    }


def chamber_coords() -> dict:
    """Coordinates of per-chamber, per-channel variables: chamber, channel and the channel's labels.

    >>> coords = chamber_coords()
    >>> coords["tdc_channel"][1][1, :3].tolist(), coords["layer"][1][:4].tolist(), coords["cell"][1][60:].tolist()
    ([64, 65, 66], [4, 2, 3, 1], [15, 15, 15, 15])
    """
    chamber, channel = det.CHAMBERS, np.arange(NCH)
    return {
        "chamber": ("chamber", chamber),
        "channel": ("channel", channel, {"long_name": "channel inside the chamber (TDC_CHANNEL % 64)"}),
        "tdc_channel": (("chamber", "channel"), (chamber[:, None] % 2) * NCH + channel[None, :],
                        {"long_name": "TDC_CHANNEL"}),
        "layer": ("channel", det.layer_of(channel), {"long_name": "layer (1 bottom .. 4 top)"}),
        "cell": ("channel", det.cell_of(channel), {"long_name": "cell column"}),
    }


def first_of_runs(sorted_values: np.ndarray) -> np.ndarray:
    """Mask of the first element of each run of equal values of a non-empty array.

    >>> first_of_runs(np.array([3, 3, 5, 7, 7])).tolist()
    [True, False, True, True, False]
    """
    return np.concatenate(([True], sorted_values[1:] != sorted_values[:-1]))


def add_up(arrays: Sequence[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The sum of equally shaped int64 arrays (zeros of ``shape`` for none; the one array itself for one).

    >>> add_up([np.ones(2, np.int64)] * 3, (2,)).tolist(), add_up([], (2,)).tolist()
    ([3, 3], [0, 0])
    """
    if len(arrays) == 1:
        return arrays[0]
    out = np.zeros(shape, np.int64)
    for a in arrays:
        out += a
    return out
