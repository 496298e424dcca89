"""Seeded cosmic-muon DAQ generator for the drift-tube telescope.

It produces the rows the real DAQ would send, as :class:`~dtlive.core.rows.Rows`:

- straight cosmic tracks (cos^n zenith, uniform azimuth) crossing the telescope; every layer of every
  chamber the track crosses records the cell whose wire is nearest, with the true drift time
  ``|x_track - x_wire| / v_drift`` (a 0 .. ~390 ns box), single-cell efficiency and a little time jitter;
  chambers 0, 2, 3 measure x, chamber 1 (``ROTATED_CHAMBER``) measures y;
- one scintillator hit (FPGA 1 ch 128) per muon at ``t_muon + SCINT_DELAY_NS``; chamber ``c`` hits are
  recorded at ``t_muon + drift - (T0_OFFSET_NS[c] - SCINT_DELAY_NS)``, so the analysis formula
  ``DRIFTIME = t_hit - (t_scint - T0_OFFSET_NS[c])`` gives back the true drift time;
- the trigger/OR word (ch 138, TDC_MEAS 1) on an FPGA when both its chambers saw a >= 3-layer segment,
  ``trigger_latency_ns`` after the last hit of those chambers (the coincidence completes with it), as in
  run 591 (~13 BX after the first hit); or, with ``trigger_timing="fixed"``, at the fixed latency
  ``TRIGGER_T0_OFFSET_NS`` after the chamber's t0 (a hardware meantimer), both with a little jitter;
- noise: single hits uniform in time on all 256 chamber channels (rates spread log-normally), a few
  noisy channels and rare same-channel afterpulses a few BX later;
- faults (:class:`~dtlive.core.faults.Faults` in ``SimConfig.faults``): dead and noisy channels, chambers
  losing hits (HV), t0 shifts and drift-velocity changes per chamber, drawn from a generator of their own;
- ancillary packets (HEAD 3, 1, 0, 4, 5 with float TDC_MEAS, BX up to 18504) whose ORBIT_CNT sits
  ~10-12 s ahead of the hits around them, like the 2023 course stream;
- DAQ order: every FPGA emits in time order, in blocks of up to 4 rows close in time; blocks of the two
  FPGAs (and of the ancillary words) are interleaved by the time of their first row, so the stream is
  only roughly time-ordered (small backward steps, ORBIT_CNT at most one orbit back).

Everything is vectorised with numpy; the only Python loop is over chunks. :func:`simulate_truth` also returns
what was generated for each muon (:class:`MuonTruth`).

>>> rows = simulate(0.05, seed=1)
>>> bool((rows.head == 2).sum() > 100), rows.orbit.dtype, bool(rows.orbit.min() > 2**31)
(True, dtype('int64'), True)
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from dtlive.core import detector as det
from dtlive.core.faults import Faults
from dtlive.core.rows import Rows

DEFAULT_START_ORBIT = 3_387_200_000
_N_NOISE_CHANNELS = det.N_FPGA * det.CHAMBER_CHANNELS  # 256 chamber channels
_ANCILLARY_PACKET = np.array([3, 1, 0, 4, 5])  # HEAD sequence of one ancillary packet
_ANCILLARY_SATURATED_BX = 18504  # the HEAD 3 BX value seen saturated in the 2023 stream
_MUON_MARGIN_NS = 50.0  # muon crosses this long after its event time, so no row precedes its chunk


@dataclass(frozen=True)
class SimConfig:
    """Knobs of the generator; the defaults reproduce the real telescope (run 591, 2023 stream).

    ``hit_rate_hz`` is the total HEAD-2 rate (chamber, scintillator and trigger-word hits); the noise
    rate per channel is derived from it unless ``noise_rate_hz_per_channel`` is given. With the default
    140 Hz of muons (~10.8 rows each) and 5 kHz in total, ~27 % of orbits hold a hit, as in run 591, which
    also shows ~140 Hz of orbits with a >= 3-layer segment. Tracks are generated uniformly over
    ``generation_halfwidth_mm`` at the mid-height of the telescope; chambers are taken square (wires as
    long as a layer is wide) unless ``chamber_halfwidth_mm`` says otherwise.

    >>> cfg = SimConfig(muon_rate_hz=50.0, ancillary_rate_hz=0.0)
    >>> round(channel_noise_rates(seed=3, config=cfg).sum() + cfg.muon_rate_hz * cfg.hits_per_muon())
    5000
    """

    hit_rate_hz: float = det.TYPICAL_HIT_RATE_HZ  # total HEAD-2 rate over the telescope
    muon_rate_hz: float = 140.0  # tracks through the telescope (scintillator rate)
    zenith_power: float = 2.0  # intensity ~ cos^n(zenith)
    generation_halfwidth_mm: float = det.CELLS_PER_LAYER * det.CELL_WIDTH_MM / 2  # track (x, y) at mid-height
    chamber_halfwidth_mm: float = det.CELLS_PER_LAYER * det.CELL_WIDTH_MM / 2  # active half-length along the wires
    efficiency: float = 0.95  # single-cell efficiency
    time_resolution_ns: float = 2.0  # Gaussian jitter of chamber hit times
    noise_rate_hz_per_channel: float | None = None  # typical channel; None: derived from hit_rate_hz
    noise_spread: float = 0.3  # log-normal sigma of the per-channel noise rates
    n_noisy_channels: int = 3
    noisy_factor: tuple[float, float] = (20.0, 50.0)  # noisy channel rate / its normal rate, uniform
    afterpulse_prob: float = 0.03  # chance that a noise hit is followed by another on the same channel
    afterpulse_delay_ns: tuple[float, float] = (100.0, 450.0)
    ancillary_rate_hz: float = 20.0  # ancillary packets (5 rows) per second per FPGA; 0 disables them
    ancillary_lead_s: tuple[float, float] = (12.3, 10.2)  # ancillary ORBIT_CNT ahead of the hits, per FPGA
    scintillator: bool = True
    trigger_word: bool = True
    trigger_min_layers: int = 3  # layers needed in both chambers of an FPGA for its trigger word
    trigger_timing: str = "last_hit"  # "last_hit": latency after the segment's last hit; "fixed": after t0
    trigger_latency_ns: float = 45.0  # after the last hit of the FPGA's two chambers (run 591: 35 ns + BX rounding)
    trigger_jitter_ns: float = 3.0  # Gaussian spread of the trigger word's time ("fixed": TRIGGER_JITTER_NS)
    block_rows: int = 4  # DAQ block size per FPGA
    block_gap_ns: float = 16 * det.BX_NS  # a block only holds rows this close to each other
    faults: Faults = Faults()  # what is wrong with the detector (none: the rows are those of a sound one)

    def __post_init__(self) -> None:
        if not 0 <= self.efficiency <= 1 or not 0 <= self.afterpulse_prob < 1:
            raise ValueError("efficiency must be in [0, 1] and afterpulse_prob in [0, 1)")
        if self.block_rows < 1 or min(self.hit_rate_hz, self.muon_rate_hz, self.ancillary_rate_hz) < 0:
            raise ValueError("block_rows must be >= 1 and rates >= 0")
        if self.trigger_timing not in ("last_hit", "fixed"):
            raise ValueError(f"trigger_timing must be 'last_hit' or 'fixed', got {self.trigger_timing!r}")

    def hits_per_muon(self) -> float:
        """Mean HEAD-2 rows per muon (chamber hits + scintillator + trigger words), by a fixed-seed Monte Carlo.

        >>> 10 < SimConfig().hits_per_muon() < 16
        True
        """
        return _hits_per_muon(self)


def simulate(
    duration_s: float, *, seed: int = 0, start_orbit: int = DEFAULT_START_ORBIT, config: SimConfig | None = None
) -> Rows:
    """All DAQ rows of ``duration_s`` seconds of detector time starting at ``start_orbit``, in DAQ order.

    ``Rows.offset`` is the row index (partition 0). Same seed, same rows; equal to the first chunk of
    ``stream(chunk_s=duration_s)`` with the same arguments.

    >>> rows = simulate(0.2, seed=7)
    >>> hits = rows.select(rows.head == 2)
    >>> bool(600 < len(hits) < 1400), int(rows.offset[-1]) == len(rows) - 1
    (True, True)
    """
    return next(stream(chunk_s=duration_s, seed=seed, start_orbit=start_orbit, config=config))


def stream(
    *, chunk_s: float = 1.0, seed: int = 0, start_orbit: int = DEFAULT_START_ORBIT, config: SimConfig | None = None
) -> Iterator[Rows]:
    """Endless consecutive chunks of ``chunk_s`` seconds of DAQ rows (deterministic for a seed).

    Chunk k holds exactly the hits timed in ``[start + k * chunk_s, start + (k + 1) * chunk_s)``; rows of an
    event that spill past a chunk's end come in the next one. Offsets keep counting across chunks.

    >>> chunks = stream(chunk_s=0.1, seed=2)
    >>> a, b = next(chunks), next(chunks)
    >>> bool(a.orbit[a.head == 2].max() <= b.orbit[b.head == 2].min()), int(b.offset[0]) == len(a)
    (True, True)
    """
    if chunk_s <= 0:
        raise ValueError(f"chunk_s must be positive, got {chunk_s}")
    cfg = config or SimConfig()
    noise_rates, rngs = _generators(cfg, seed)  # raises on impossible rates
    return _chunks(cfg, noise_rates, rngs, int(start_orbit), chunk_s * 1e9)


def _generators(cfg: SimConfig, seed: int) -> tuple[np.ndarray, tuple[np.random.Generator, np.random.Generator]]:
    """The noise rates of the seed's layout and the generators of the events and of the faults."""
    layout_seq, event_seq, fault_seq = np.random.SeedSequence(seed).spawn(3)  # the first two as without faults
    noise_rates = _channel_noise_rates(cfg, np.random.default_rng(layout_seq))
    return noise_rates, (np.random.default_rng(event_seq), np.random.default_rng(fault_seq))


def _chunks(
    cfg: SimConfig, noise_rates: np.ndarray, rngs: tuple[np.random.Generator, np.random.Generator], base_orbit: int,
    chunk_ns: float, truths: list | None = None,
) -> Iterator[Rows]:
    rng, fault_rng = rngs
    frac_ns = 0.0  # chunk start = base_orbit * ORBIT_NS + frac_ns
    pending: dict[str, np.ndarray] | None = None  # rows timed past the previous chunk's end
    next_offset = 0
    while True:
        t_end = frac_ns + chunk_ns
        muons, truth = _muon_rows(cfg, rng, base_orbit, frac_ns, t_end, fault_rng)
        if truths is not None:
            truths.append(truth)
        parts = [muons, _noise_rows(cfg, rng, noise_rates, base_orbit, frac_ns, t_end, fault_rng)]
        if cfg.ancillary_rate_hz > 0:
            parts.append(_ancillary_rows(cfg, rng, base_orbit, frac_ns, t_end))
        if pending is not None:
            parts.append(pending)
        rows = _concat(parts)
        late = rows["t"] >= t_end
        pending = {k: v[late] for k, v in rows.items()}
        whole = int(t_end // det.ORBIT_NS)
        pending["t"] = pending["t"] - whole * det.ORBIT_NS
        base_orbit, frac_ns = base_orbit + whole, t_end - whole * det.ORBIT_NS
        perm = _daq_order(rows, late, cfg)
        out = {k: rows[k][perm] for k in ("head", "fpga", "channel", "orbit", "bx", "tdc")}
        tdc = out["tdc"] if cfg.ancillary_rate_hz > 0 else out["tdc"].astype(np.int64)
        n = len(tdc)
        yield Rows.from_columns(
            head=out["head"], fpga=out["fpga"], channel=out["channel"], orbit=out["orbit"], bx=out["bx"], tdc=tdc,
            partition=0, offset=np.arange(next_offset, next_offset + n, dtype=np.int64),
        )  # fmt: skip
        next_offset += n


@dataclass(frozen=True, eq=False)
class MuonTruth:
    """What the simulator generated for each muon of a chunk, in the order of their time (numpy arrays).

    ``orbit`` and ``time_ns`` (inside that orbit) of the muon's passage; ``t0_ns`` (n, N_CHAMBERS): absolute
    time (ns, as :func:`dtlive.detector.hit_time_ns`) at which a hit with zero drift time is recorded in each
    chamber (a fault's t0 shift included); ``x0_mm``, ``y0_mm`` at the telescope's mid-height, ``theta_rad``
    (zenith), ``phi_rad`` (azimuth); ``local_mm`` (n, 16 planes: chamber * 4 + layer - 1) the measured
    coordinate of the crossing of each plane, ``hit`` (n, 16) whether that plane recorded a hit (hits lost to
    faults left out); ``trigger_ns`` (n, N_FPGA) absolute time of the trigger word of each FPGA (NaN for none).
    A muon near the end of a chunk may have some of its rows in the next chunk.

    >>> rows, truth = simulate_truth(0.2, seed=7)
    >>> len(truth) == len(truth.orbit), truth.t0_ns.shape[1], truth.hit.shape[1], truth.trigger_ns.shape[1]
    (True, 4, 16, 2)
    >>> bool((np.diff(truth.orbit * det.ORBIT_NS + truth.time_ns) >= 0).all())  # in the order of their time
    True
    """

    orbit: np.ndarray
    time_ns: np.ndarray
    t0_ns: np.ndarray
    x0_mm: np.ndarray
    y0_mm: np.ndarray
    theta_rad: np.ndarray
    phi_rad: np.ndarray
    local_mm: np.ndarray
    hit: np.ndarray
    trigger_ns: np.ndarray

    def __len__(self) -> int:
        return len(self.orbit)


def simulate_truth(
    duration_s: float, *, seed: int = 0, start_orbit: int = DEFAULT_START_ORBIT, config: SimConfig | None = None
) -> tuple[Rows, MuonTruth]:
    """:func:`simulate`'s rows (the very same) and the truth of the muons generated in them.

    >>> rows, truth = simulate_truth(0.2, seed=7)
    >>> _same = lambda a, b: all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("orbit", "bx", "channel"))
    >>> _same(rows, simulate(0.2, seed=7)), bool(15 < len(truth) < 45), truth.t0_ns.shape[1]
    (True, True, 4)
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    cfg = config or SimConfig()
    noise_rates, rngs = _generators(cfg, seed)
    truths: list[MuonTruth] = []
    rows = next(_chunks(cfg, noise_rates, rngs, int(start_orbit), duration_s * 1e9, truths))
    return rows, truths[0]


def channel_noise_rates(*, seed: int = 0, config: SimConfig | None = None) -> np.ndarray:
    """Noise hit rate (Hz, afterpulses included) of every chamber channel, shape ``(N_FPGA, CHAMBER_CHANNELS)``.

    The same layout ``simulate``/``stream`` use for that seed; the noisy channels are its largest entries.

    >>> rates = channel_noise_rates(seed=0)
    >>> rates.shape, bool(np.sort(rates.ravel())[-3] > 10 * np.median(rates))
    ((2, 128), True)
    """
    cfg = config or SimConfig()
    layout_seq, _ = np.random.SeedSequence(seed).spawn(2)
    return _channel_noise_rates(cfg, np.random.default_rng(layout_seq)).reshape(det.N_FPGA, det.CHAMBER_CHANNELS)


# --- internals ------------------------------------------------------------------------------------------------------

_FIELDS = ("t", "head", "fpga", "channel", "orbit", "bx", "tdc")  # t: ordering time (ns after base orbit start)
_PLANE_CHAMBER = np.repeat(det.CHAMBERS, det.N_LAYERS)  # plane p -> chamber, layer
_PLANE_LAYER = np.tile(np.arange(1, det.N_LAYERS + 1), det.N_CHAMBERS)
_PLANE_Z = det.CHAMBER_HEIGHT_MM[_PLANE_CHAMBER] + np.array([det.LAYER_Z_MM[k] for k in _PLANE_LAYER])
_PLANE_SHIFT = np.array([det.LAYER_X_SHIFT_MM[k] for k in _PLANE_LAYER])
_PLANE_ROTATED = _PLANE_CHAMBER == det.ROTATED_CHAMBER
_Z_MID = (det.CHAMBER_HEIGHT_MM.min() + det.CHAMBER_HEIGHT_MM.max()) / 2


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in _FIELDS}


def _fields_from_time(t: np.ndarray, base_orbit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ORBIT_CNT, BX_COUNTER, TDC_MEAS of times in ns after the start of ``base_orbit``."""
    k = np.floor(t / det.ORBIT_NS)
    rem = t - k * det.ORBIT_NS
    bx = np.clip(np.floor(rem / det.BX_NS), 0, det.BX_PER_ORBIT - 1)
    tdc = np.clip(np.floor((rem - bx * det.BX_NS) * det.TDC_PER_BX / det.BX_NS), 0, det.TDC_PER_BX - 1)
    return base_orbit + k.astype(np.int64), bx.astype(np.int64), tdc.astype(np.int64)


def _hit_rows(t: np.ndarray, fpga: np.ndarray, channel: np.ndarray, base_orbit: int, tdc: int | None = None) -> dict:
    """HEAD-2 rows at times ``t``; their ordering time is the time the fields encode."""
    orbit, bx, tdc_meas = _fields_from_time(t, base_orbit)
    if tdc is not None:  # trigger word: fixed TDC_MEAS
        tdc_meas = np.full_like(tdc_meas, tdc)
    t_rec = (orbit - base_orbit) * det.ORBIT_NS + bx * det.BX_NS + tdc_meas * (det.BX_NS / det.TDC_PER_BX)
    n = len(t)
    return {
        "t": t_rec, "head": np.full(n, det.HIT_HEAD, np.int64), "fpga": np.asarray(fpga, np.int64),
        "channel": np.asarray(channel, np.int64), "orbit": orbit, "bx": bx, "tdc": tdc_meas.astype(np.float64),
    }  # fmt: skip


def _tracks(cfg: SimConfig, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crossing of ``n`` tracks with every plane: local measured coordinate, nearest cell, hit mask."""
    local, cell, hit, _ = _tracks_and_angles(cfg, rng, n)
    return local, cell, hit


def _tracks_and_angles(cfg: SimConfig, rng: np.random.Generator, n: int) -> tuple:
    """:func:`_tracks` and the tracks' (x0, y0, zenith, azimuth)."""
    w = cfg.generation_halfwidth_mm
    x0, y0 = rng.uniform(-w, w, n), rng.uniform(-w, w, n)
    cos_t = rng.random(n) ** (1.0 / (cfg.zenith_power + 2.0))  # flux through a horizontal plane ~ cos^(n+1) sin
    tan_t = np.sqrt(1.0 - cos_t**2) / cos_t
    phi = rng.uniform(0.0, 2 * np.pi, n)
    dz = _PLANE_Z - _Z_MID
    x = x0[:, None] + np.outer(tan_t * np.cos(phi), dz)
    y = y0[:, None] + np.outer(tan_t * np.sin(phi), dz)
    local = np.where(_PLANE_ROTATED, y, x)
    along = np.where(_PLANE_ROTATED, x, y)
    cell = np.rint((local - _PLANE_SHIFT) / det.CELL_WIDTH_MM)
    hit = (cell >= 0) & (cell < det.CELLS_PER_LAYER) & (np.abs(along) <= cfg.chamber_halfwidth_mm)
    hit &= rng.random(hit.shape) < cfg.efficiency
    return local, cell, hit, (x0, y0, np.arccos(cos_t), phi)


def _trigger_fpgas(cfg: SimConfig, hit: np.ndarray) -> np.ndarray:
    """(n_muons, N_FPGA) mask: both chambers of the FPGA saw >= trigger_min_layers layers."""
    layers = hit.reshape(len(hit), det.N_CHAMBERS, det.N_LAYERS).sum(axis=2)
    seg = layers >= cfg.trigger_min_layers
    return seg.reshape(len(hit), det.N_FPGA, det.N_CHAMBERS // det.N_FPGA).all(axis=2)


@functools.lru_cache(maxsize=64)
def _hits_per_muon(cfg: SimConfig, n: int = 200_000) -> float:
    _, _, hit = _tracks(cfg, np.random.default_rng(20240591), n)  # the trigger timing changes no count
    per_muon = hit.sum() / n + float(cfg.scintillator)
    if cfg.trigger_word:
        per_muon += _trigger_fpgas(cfg, hit).sum() / n
    return float(per_muon)


def _channel_noise_rates(cfg: SimConfig, rng: np.random.Generator) -> np.ndarray:
    """Noise hit rate (Hz) of the 256 chamber channels, index fpga * 128 + channel."""
    weight = rng.lognormal(0.0, cfg.noise_spread, _N_NOISE_CHANNELS)
    weight /= weight.mean()
    noisy = rng.choice(_N_NOISE_CHANNELS, size=cfg.n_noisy_channels, replace=False)
    weight[noisy] *= rng.uniform(*cfg.noisy_factor, size=cfg.n_noisy_channels)
    if cfg.noise_rate_hz_per_channel is not None:
        return cfg.noise_rate_hz_per_channel * weight
    noise_total = cfg.hit_rate_hz - cfg.muon_rate_hz * cfg.hits_per_muon()
    if noise_total < 0:
        raise ValueError(
            f"hit_rate_hz={cfg.hit_rate_hz} is below the muon hits alone "
            f"({cfg.muon_rate_hz} Hz x {cfg.hits_per_muon():.1f} hits/muon)"
        )
    return noise_total * weight / weight.sum()


def _muon_rows(cfg: SimConfig, rng: np.random.Generator, base_orbit: int, t0: float, t1: float,
               fault_rng: np.random.Generator) -> tuple[dict, MuonTruth]:
    faults = cfg.faults
    shift = np.asarray(faults.t0_shift_ns, np.float64)
    n = rng.poisson(cfg.muon_rate_hz * (t1 - t0) * 1e-9)
    t_mu = np.sort(rng.uniform(t0, t1, n)) + _MUON_MARGIN_NS
    local, cell, hit, (x0, y0, theta, phi) = _tracks_and_angles(cfg, rng, n)
    mu, plane = np.nonzero(hit)
    chamber, layer, cell = _PLANE_CHAMBER[plane], _PLANE_LAYER[plane], cell[mu, plane].astype(np.int64)
    velocity = det.DRIFT_VELOCITY_MM_PER_NS * np.asarray(faults.drift_velocity_scale)[chamber]
    drift_ns = np.abs(local[mu, plane] - (cell * det.CELL_WIDTH_MM + _PLANE_SHIFT[plane])) / velocity
    jitter = np.clip(rng.normal(0.0, cfg.time_resolution_ns, len(mu)), -3 * cfg.time_resolution_ns, None)
    t_hit = t_mu[mu] + drift_ns - (det.T0_OFFSET_NS[chamber] - det.SCINT_DELAY_NS) + jitter + shift[chamber]
    fpga, channel = det.channel_of(chamber, layer, cell)
    kept = (faults.recorded(fpga * det.CHAMBER_CHANNELS + channel, fault_rng) if faults.drops
            else np.ones(len(mu), bool))
    generated, hit = hit, hit.copy()
    hit[mu[~kept], plane[~kept]] = False  # what was recorded
    mu, chamber, t_hit = mu[kept], chamber[kept], t_hit[kept]
    parts = [_hit_rows(t_hit, fpga[kept], channel[kept], base_orbit)]
    if cfg.scintillator:
        parts.append(
            _hit_rows(t_mu + det.SCINT_DELAY_NS, np.full(n, det.SCINT_FPGA), np.full(n, det.SCINT_CHANNEL), base_orbit)
        )
    t_trig_mu = np.full((n, det.N_FPGA), np.nan)
    if cfg.trigger_word:
        mu_t, fpga_t = np.nonzero(_trigger_fpgas(cfg, generated))  # jitter drawn as without faults
        if cfg.trigger_timing == "fixed":  # t0 of the FPGA's first chamber + its offset
            first = fpga_t * (det.N_CHAMBERS // det.N_FPGA)
            t_trig = (t_mu[mu_t] - (det.T0_OFFSET_NS[first] - det.SCINT_DELAY_NS) + det.TRIGGER_T0_OFFSET_NS[first]
                      + shift[first] + rng.normal(0.0, det.TRIGGER_JITTER_NS, len(mu_t)))
        else:  # the last hit of the FPGA's chambers completes the coincidence
            last = np.full((n, det.N_FPGA), -np.inf)
            np.maximum.at(last, (mu, chamber // (det.N_CHAMBERS // det.N_FPGA)), t_hit)
            t_trig = last[mu_t, fpga_t] + cfg.trigger_latency_ns + rng.normal(0.0, cfg.trigger_jitter_ns, len(mu_t))
        fires = _trigger_fpgas(cfg, hit)[mu_t, fpga_t]  # lost hits may leave too few layers
        mu_t, fpga_t, t_trig = mu_t[fires], fpga_t[fires], t_trig[fires]
        parts.append(_hit_rows(t_trig, fpga_t, np.full(len(mu_t), det.TRIGGER_CHANNEL), base_orbit, tdc=1))
        t_trig_mu[mu_t, fpga_t] = t_trig
    base_ns = base_orbit * det.ORBIT_NS
    k = np.floor(t_mu / det.ORBIT_NS)
    truth = MuonTruth(
        orbit=base_orbit + k.astype(np.int64), time_ns=t_mu - k * det.ORBIT_NS,
        t0_ns=base_ns + t_mu[:, None] - (det.T0_OFFSET_NS - det.SCINT_DELAY_NS - shift)[None, :], x0_mm=x0, y0_mm=y0,
        theta_rad=theta, phi_rad=phi, local_mm=local, hit=hit, trigger_ns=base_ns + t_trig_mu,
    )  # fmt: skip
    return _concat(parts), truth


def _noise_rows(
    cfg: SimConfig, rng: np.random.Generator, rates: np.ndarray, base_orbit: int, t0: float, t1: float,
    fault_rng: np.random.Generator,
) -> dict:
    primary = rates / (1.0 + cfg.afterpulse_prob / (1.0 - cfg.afterpulse_prob))  # geometric trains of afterpulses
    counts = rng.poisson(primary * (t1 - t0) * 1e-9)
    index = np.repeat(np.arange(_N_NOISE_CHANNELS), counts)
    t = rng.uniform(t0, t1, len(index))
    if cfg.afterpulse_prob > 0:
        n_after = rng.geometric(1.0 - cfg.afterpulse_prob, len(index)) - 1
        parent = np.repeat(np.arange(len(index)), n_after)
        csum = np.cumsum(rng.uniform(*cfg.afterpulse_delay_ns, len(parent)))  # delays add up along a train
        has = n_after > 0
        train_start = (np.cumsum(n_after) - n_after)[has]
        delay = csum - np.repeat(np.concatenate([[0.0], csum])[train_start], n_after[has])
        index = np.concatenate([index, index[parent]])
        t = np.concatenate([t, t[parent] + delay])
    if cfg.faults.active:
        added_t, added = cfg.faults.noise_hits(fault_rng, t0, t1)
        t, index = np.concatenate([t, added_t]), np.concatenate([index, added])
        if cfg.faults.drops:
            keep = cfg.faults.recorded(index, fault_rng)
            t, index = t[keep], index[keep]
    return _hit_rows(t, index // det.CHAMBER_CHANNELS, index % det.CHAMBER_CHANNELS, base_orbit)


def _ancillary_rows(cfg: SimConfig, rng: np.random.Generator, base_orbit: int, t0: float, t1: float) -> dict:
    """Ancillary packets (HEAD 3, 1, 0, 4, 5) per FPGA, shaped like the 2023 course stream."""
    counts = rng.poisson(cfg.ancillary_rate_hz * (t1 - t0) * 1e-9, det.N_FPGA)
    fpga_p = np.repeat(np.arange(det.N_FPGA), counts)
    n_p = len(fpga_p)
    t_p = rng.uniform(t0, t1, n_p)  # when the packet is sent
    lead_ns = np.asarray(cfg.ancillary_lead_s, np.float64)[fpga_p] * 1e9
    orbit_p = base_orbit + np.floor((t_p + lead_ns) / det.ORBIT_NS).astype(np.int64)  # what it is about
    n_h = len(_ANCILLARY_PACKET)
    head = np.tile(_ANCILLARY_PACKET, n_p)
    n = len(head)
    channel = np.zeros(n, np.int64)
    bx = np.zeros(n, np.int64)
    tdc = np.zeros(n, np.float64)
    h3, h1, h0, h4, h5 = (head == h for h in (3, 1, 0, 4, 5))
    bx[h3] = np.where(rng.random(n_p) < 0.3, _ANCILLARY_SATURATED_BX, rng.integers(0, _ANCILLARY_SATURATED_BX, n_p))
    tdc[h1] = rng.integers(0, 141, n_p)
    channel[h0] = np.minimum(rng.geometric(0.5, n_p) - 1, 31)
    bx[h0] = rng.integers(0, det.BX_PER_ORBIT, n_p)
    tdc[h0] = rng.integers(0, det.TDC_PER_BX, n_p)
    tdc[h4] = np.round(np.clip(rng.normal(0.0, 0.35, n_p), -0.99, 0.99) * 16384) / 16384  # tan(psi), fixed point
    tdc[h5] = np.round(rng.uniform(-80.0, 80.0, n_p) * 64) / 64  # local x, 1/64 steps
    return {
        "t": np.repeat(t_p, n_h), "head": head, "fpga": np.repeat(fpga_p, n_h), "channel": channel,
        "orbit": np.repeat(orbit_p, n_h), "bx": bx, "tdc": tdc,
    }  # fmt: skip


def _daq_order(rows: dict[str, np.ndarray], drop: np.ndarray, cfg: SimConfig) -> np.ndarray:
    """Row permutation (without ``drop`` rows) in DAQ order.

    Per source (FPGA x hits/ancillary) in time order, cut in blocks of up to ``block_rows`` rows closer than
    ``block_gap_ns`` to each other; blocks of all sources interleaved by the time of their first row.
    """
    source = (rows["fpga"] + det.N_FPGA * (rows["head"] != det.HIT_HEAD)).astype(np.int8)
    by_time = np.argsort(rows["t"], kind="stable")
    order = by_time[np.argsort(source[by_time], kind="stable")]  # radix sort on int8: source, then time
    order = order[~drop[order]]
    n = len(order)
    if n == 0:
        return order
    t, src = rows["t"][order], source[order]
    new_cluster = np.ones(n, bool)
    new_cluster[1:] = (src[1:] != src[:-1]) | (np.diff(t) > cfg.block_gap_ns)
    cluster_first = np.flatnonzero(new_cluster)
    pos = np.arange(n) - np.repeat(cluster_first, np.diff(np.append(cluster_first, n)))
    block_first = np.flatnonzero(new_cluster | (pos % cfg.block_rows == 0))
    block_len = np.diff(np.append(block_first, n))
    block_order = np.argsort(t[block_first], kind="stable")
    first, length = block_first[block_order], block_len[block_order]
    return order[np.repeat(first - np.cumsum(length) + length, length) + np.arange(n)]
