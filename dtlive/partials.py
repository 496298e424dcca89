"""Mergeable shares of a window's products. Pure: numpy in, numpy out.

When the hits of one window are spread over several consumers (the partitions read by different Dask
workers), each consumer computes a :class:`Partial` of its share and keeps a little of its hits
(:class:`Kept`); merging gives exactly :func:`dtlive.products.compute_arrays` of all the hits:

* counts that add up (total, hits per chamber, channel occupancy) are summed;
* multiplicity (distinct active channels per orbit and chamber): a chamber seen by one share only is
  exact in that share's own histogram; for a chamber seen by several shares, the shares' sorted
  ``orbit * N_CHAMBERS + chamber`` keys with a uint64 mask of the active local channels are merged
  (OR of the masks of equal keys, popcount);
* drift time and scintillator occupancy pair every chamber hit with the earliest scintillator hit of
  its orbit, possibly in another share: the shares' per-orbit earliest-scintillator tables are merged
  (:func:`merge_scint`, minimum per orbit) and each share histograms its own chamber hits against the
  merged table (:func:`drift_part`).

:func:`combine` runs the whole exchange in one process:

>>> from dtlive.rows import Rows
>>> from dtlive.products import compute_arrays
>>> a = Rows.from_columns(head=[2, 2], fpga=[0, 1], channel=[1, 128], orbit=[5, 5], bx=[10, 0], tdc=[0, 0])
>>> b = Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[2, 1], orbit=[5, 5], bx=[12, 11], tdc=[0, 0])
>>> merged = combine([a, b])
>>> int(merged["active_channels_per_orbit"][0, 1]), int(merged["drift_time_ns"].sum())  # orbit 5: 2 channels
(1, 3)
>>> whole = compute_arrays(Rows.concat([a, b]))
>>> all((merged[k] == whole[k]).all() for k in whole)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dtlive import detector as det
from dtlive.products import DRIFT_EDGES_NS
from dtlive.rows import Rows

NCH = det.CHANNELS_PER_CHAMBER
NCHAMB = det.N_CHAMBERS
_EMPTY_I = np.zeros(0, np.int64)
_EMPTY_U = np.zeros(0, np.uint64)


@dataclass
class Partial:
    """The mergeable products of one share of a window (small: no per-hit arrays but the scintillator table)."""

    total_hits: int
    occupancy: np.ndarray  # (N_CHAMBERS, 64) hits per local channel
    multiplicity: np.ndarray  # (N_CHAMBERS, 65) this share's own histogram of distinct channels (bin 0 unused)
    scint_orbits: np.ndarray  # sorted distinct orbits with a scintillator hit
    scint_times: np.ndarray  # earliest scintillator time (ns) of each of those orbits

    @property
    def chambers(self) -> np.ndarray:
        """Mask of the chambers with hits in this share."""
        return self.occupancy.sum(axis=1) > 0


@dataclass
class Kept:
    """What a share keeps of its chamber hits until the merged scintillator table comes back."""

    orbit: np.ndarray  # int64, per chamber hit
    cell: np.ndarray  # int16: chamber * 64 + local channel
    t_ns: np.ndarray  # float64 hit time inside its orbit (drift times pair hits of one orbit)
    keys: np.ndarray  # sorted distinct orbit * N_CHAMBERS + chamber
    masks: np.ndarray  # uint64: active local channels of each key

    def masks_of(self, chambers: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The (keys, masks) of the given chambers only (what the merge of a shared chamber needs)."""
        sel = np.isin(self.keys % NCHAMB, np.asarray(chambers, np.int64))
        return self.keys[sel], self.masks[sel]


@dataclass
class DriftPart:
    """One share's chamber hits histogrammed against the merged scintillator table."""

    scint_occupancy: np.ndarray  # (N_CHAMBERS, 64)
    drift: np.ndarray  # (N_CHAMBERS, bins)
    underflow: np.ndarray  # (N_CHAMBERS,)
    overflow: np.ndarray  # (N_CHAMBERS,)


def share(hits: Rows) -> tuple[Partial, Kept]:
    """The partial products of one share of a window's cleansed hits, and what it keeps for the merge.

    >>> p, k = share(Rows.from_columns(head=[2, 2], fpga=[0, 0], channel=[3, 3], orbit=[9, 9], bx=[0, 1], tdc=[0, 0]))
    >>> p.total_hits, int(p.multiplicity[0, 1]), k.keys.tolist(), k.masks.tolist()
    (2, 1, [36], [8])
    """
    fpga, channel, orbit = hits.fpga, hits.channel, hits.orbit
    in_chamber = channel < det.CHAMBER_CHANNELS
    cell = 2 * fpga[in_chamber] * NCH + channel[in_chamber]  # chamber * 64 + local channel
    occupancy = np.bincount(cell, minlength=NCHAMB * NCH).reshape(NCHAMB, NCH)
    o = orbit[in_chamber]
    keys, masks = _EMPTY_I, _EMPTY_U
    multiplicity = np.zeros((NCHAMB, NCH + 1), np.int64)
    if len(o):
        low = int(o.min())
        combined = np.sort((o - low) * (NCHAMB * NCH) + cell, kind="stable")  # nearly sorted: timsort is fast
        combined = combined[np.r_[True, combined[1:] != combined[:-1]]]  # distinct (orbit, chamber, channel)
        orbit_chamber = combined // NCH
        starts = np.flatnonzero(np.r_[True, orbit_chamber[1:] != orbit_chamber[:-1]])
        bits = np.left_shift(np.uint64(1), (combined % NCH).astype(np.uint64))
        masks = np.bitwise_or.reduceat(bits, starts)
        keys = orbit_chamber[starts] + low * NCHAMB
        counts = np.diff(np.r_[starts, len(combined)])
        multiplicity = np.bincount((keys % NCHAMB) * (NCH + 1) + counts,
                                   minlength=NCHAMB * (NCH + 1)).reshape(NCHAMB, NCH + 1)
    is_scint = (fpga == det.SCINT_FPGA) & (channel == det.SCINT_CHANNEL)
    s_orbit, t_scint = _earliest(orbit[is_scint], det.time_in_orbit_ns(hits.bx[is_scint], hits.tdc[is_scint]))
    t_hit = det.time_in_orbit_ns(hits.bx[in_chamber], hits.tdc[in_chamber])
    partial = Partial(len(hits), occupancy, multiplicity, s_orbit, t_scint)
    return partial, Kept(o, cell.astype(np.int16), t_hit, keys, masks)


def _earliest(orbits: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct orbits and the earliest time of each."""
    if not len(orbits):
        return _EMPTY_I, np.zeros(0)
    order = np.lexsort((times, orbits))
    orbits, times = orbits[order], times[order]
    first = np.r_[True, orbits[1:] != orbits[:-1]]
    return orbits[first], times[first]


def merge_scint(partials: Sequence[Partial]) -> tuple[np.ndarray, np.ndarray]:
    """The merged table of the shares: earliest scintillator time per orbit over all of them."""
    if not partials:
        return _EMPTY_I, np.zeros(0)
    return _earliest(np.concatenate([p.scint_orbits for p in partials]),
                     np.concatenate([p.scint_times for p in partials]))


def shared_chambers(partials: Sequence[Partial]) -> list[int]:
    """Chambers with hits in more than one share: their multiplicity needs the keys and masks."""
    seen = np.sum([p.chambers for p in partials], axis=0) if partials else np.zeros(NCHAMB)
    return [int(c) for c in np.flatnonzero(seen > 1)]


def drift_part(kept: Kept, scint: tuple[np.ndarray, np.ndarray],
               drift_edges: np.ndarray = DRIFT_EDGES_NS) -> DriftPart:
    """Scintillator occupancy and drift-time histogram of one share's chamber hits against a merged table."""
    s_orbit, t_scint = scint
    nbins = len(drift_edges) - 1
    out = DriftPart(np.zeros((NCHAMB, NCH), np.int64), np.zeros((NCHAMB, nbins), np.int64),
                    np.zeros(NCHAMB, np.int64), np.zeros(NCHAMB, np.int64))
    if not len(s_orbit) or not len(kept.orbit):
        return out
    idx = np.clip(np.searchsorted(s_orbit, kept.orbit), 0, len(s_orbit) - 1)
    selected = s_orbit[idx] == kept.orbit
    cell = kept.cell[selected].astype(np.int64)
    ch_sel = cell // NCH
    out.scint_occupancy = np.bincount(cell, minlength=NCHAMB * NCH).reshape(NCHAMB, NCH)
    dt = kept.t_ns[selected] - (t_scint[idx[selected]] - det.T0_OFFSET_NS[ch_sel])
    b = np.searchsorted(drift_edges, dt, side="right") - 1  # -1: underflow, nbins: overflow
    out.underflow = np.bincount(ch_sel[b < 0], minlength=NCHAMB)
    out.overflow = np.bincount(ch_sel[b >= nbins], minlength=NCHAMB)
    inside = (b >= 0) & (b < nbins)
    out.drift = np.bincount(ch_sel[inside] * nbins + b[inside], minlength=NCHAMB * nbins).reshape(NCHAMB, nbins)
    return out


@dataclass
class Request:
    """The question to one share of a window, once every share of it is known (see :func:`plan_requests`)."""

    scint: tuple[np.ndarray, np.ndarray] | None  # merged scintillator table: histogram drift against it
    chambers: list[int]  # chambers other shares saw too: send their multiplicity keys and masks


@dataclass
class Answer:
    """A share's drift part and shared-chamber masks of one window (see :func:`answer`)."""

    drift: DriftPart | None
    masks: tuple[np.ndarray, np.ndarray] | None


def plan_requests(partials: dict[int, Partial]) -> dict[int, Request]:
    """What each share of one window must send back for :func:`merge` (shares with nothing to add get no request).

    >>> a, _ = share(Rows.from_columns(head=[2], fpga=[0], channel=[1], orbit=[5], bx=[0], tdc=[0]))
    >>> b, _ = share(Rows.from_columns(head=[2], fpga=[0], channel=[2], orbit=[5], bx=[0], tdc=[0]))
    >>> {i: r.chambers for i, r in plan_requests({0: a, 1: b}).items()}  # chamber 0 seen by both: masks
    {0: [0], 1: [0]}
    """
    scint = merge_scint(list(partials.values()))
    shared = shared_chambers(list(partials.values()))
    requests = {}
    for i, p in partials.items():
        drift = len(scint[0]) > 0 and bool(p.chambers.any())
        chambers = [c for c in shared if p.chambers[c]]
        if drift or chambers:
            requests[i] = Request(scint if drift else None, chambers)
    return requests


def answer(kept: Kept, request: Request, drift_edges: np.ndarray = DRIFT_EDGES_NS) -> Answer:
    """A share's answer to its :class:`Request`, from what it kept."""
    return Answer(drift_part(kept, request.scint, drift_edges) if request.scint is not None else None,
                  kept.masks_of(request.chambers) if request.chambers else None)


def multiplicity_of(keys: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N_CHAMBERS, 65) histogram of distinct channels from keys and masks of several shares (OR, popcount).

    >>> multiplicity_of(np.array([4, 4, 5]), np.array([1, 2, 1], np.uint64))[:, :3].tolist()
    [[0, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 0]]
    """
    if not len(keys):
        return np.zeros((NCHAMB, NCH + 1), np.int64)
    order = np.argsort(keys, kind="stable")  # concatenated sorted runs: merged, not re-sorted
    keys, masks = keys[order], masks[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.bitwise_count(np.bitwise_or.reduceat(masks, starts)).astype(np.int64)
    return np.bincount((keys[starts] % NCHAMB) * (NCH + 1) + counts,
                       minlength=NCHAMB * (NCH + 1)).reshape(NCHAMB, NCH + 1)


def merge(partials: Sequence[Partial], drift_parts: Sequence[DriftPart],
          shared_masks: Sequence[tuple[np.ndarray, np.ndarray]] = (),
          drift_edges: np.ndarray = DRIFT_EDGES_NS) -> dict[str, np.ndarray]:
    """The window's products from its shares, as :func:`dtlive.products.compute_arrays` returns them.

    ``drift_parts``: every share's :func:`drift_part` against the merged table (shares without chamber
    hits, or a window without scintillator hits, may be left out: they add nothing). ``shared_masks``:
    the :meth:`Kept.masks_of` of :func:`shared_chambers` from every share that saw one of them.
    """
    nbins = len(drift_edges) - 1
    occupancy = np.zeros((NCHAMB, NCH), np.int64)
    multiplicity = np.zeros((NCHAMB, NCH + 1), np.int64)
    for p in partials:
        occupancy += p.occupancy
        multiplicity += p.multiplicity
    shared = shared_chambers(partials)
    if shared:
        keys = np.concatenate([k for k, _ in shared_masks] or [_EMPTY_I])
        masks = np.concatenate([m for _, m in shared_masks] or [_EMPTY_U])
        multiplicity[shared] = multiplicity_of(keys, masks)[shared]
    out = {
        "total_hits": np.int64(sum(int(p.total_hits) for p in partials)),
        "hits_per_chamber": occupancy.sum(axis=1),
        "channel_occupancy": occupancy,
        "active_channels_per_orbit": multiplicity[:, 1:],
        "scint_channel_occupancy": np.zeros((NCHAMB, NCH), np.int64),
        "drift_time_ns": np.zeros((NCHAMB, nbins), np.int64),
        "drift_time_ns_underflow": np.zeros(NCHAMB, np.int64),
        "drift_time_ns_overflow": np.zeros(NCHAMB, np.int64),
    }
    for d in drift_parts:
        out["scint_channel_occupancy"] += d.scint_occupancy
        out["drift_time_ns"] += d.drift
        out["drift_time_ns_underflow"] += d.underflow
        out["drift_time_ns_overflow"] += d.overflow
    return out


def merge_answers(partials: Sequence[Partial], answers: Sequence[Answer],
                  drift_edges: np.ndarray = DRIFT_EDGES_NS) -> dict[str, np.ndarray]:
    """:func:`merge` of a window's shares with their :func:`answer` to :func:`plan_requests`."""
    return merge(partials, [a.drift for a in answers if a.drift is not None],
                 [a.masks for a in answers if a.masks is not None], drift_edges)


def combine(parts: Sequence[Rows], drift_edges: np.ndarray = DRIFT_EDGES_NS) -> dict[str, np.ndarray]:
    """The products of the hits of all ``parts`` by the share-and-merge exchange, in one process."""
    shares = [share(p) for p in parts]
    requests = plan_requests({i: partial for i, (partial, _) in enumerate(shares)})
    answers = [answer(shares[i][1], r, drift_edges) for i, r in requests.items()]
    return merge_answers([partial for partial, _ in shares], answers, drift_edges)
