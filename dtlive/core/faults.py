"""Detector faults the simulator (:mod:`dtlive.core.simulate`) puts into its rows: the truth of a fault test.

A :class:`Faults` is part of a :class:`~dtlive.core.simulate.SimConfig`; with none set the simulator's rows are
exactly those of the fault-free detector. Faults act on what is recorded, never on what is generated: the
muons, their hits and the noise are drawn as without faults, then a dead channel or a chamber losing HV drops
hits, a noisy channel adds hits, a t0 shift delays a chamber's hits and a drift-velocity change stretches their
drift times. The random draws of faults come from a generator of their own, so a detector with faults sees the
same muons (and the same noise hits, where kept) as the same seed without them.

============================ ============================================================================
``dead_channels``            ``(chamber, channel)`` pairs (channel 0-63 of the chamber, ``TDC_CHANNEL % 64``)
                             that record nothing
``noisy_channels``           ``(chamber, channel, rate_hz)``: noise hits added at this rate (uniform in time)
``hit_fraction``             per chamber, the fraction of its hits (muons and noise) recorded: 0.05 for a
                             chamber that lost its HV, 0.5 for one at half its rate
``t0_shift_ns``              per chamber, a delay of all its hits (a cable, a TDC phase): the time box moves
``drift_velocity_scale``     per chamber, drift velocity over the nominal one: 0.9 is 10 % slower, so the
                             drift times are 11 % longer and Tmax grows by ~43 ns
============================ ============================================================================

>>> f = Faults(dead_channels=((1, 37),), t0_shift_ns=(0.0, 0.0, 8.0, 0.0))
>>> f.active, f.timing, f.drops, f.dead_index().tolist()
(True, True, True, [101])
>>> Faults().active
False
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtlive.core import detector as det

_NCH = det.N_CHAMBERS
_ONES = (1.0,) * _NCH
_ZEROS = (0.0,) * _NCH


@dataclass(frozen=True)
class Faults:
    """What is wrong with the simulated detector (see the module docstring); hashable, like ``SimConfig``.

    >>> Faults(hit_fraction=(1.0, 1.0, 1.0, 0.05)).describe()
    'chamber 3 records 5 % of its hits'
    >>> Faults(drift_velocity_scale=(0.9, 1.0, 1.0, 1.0)).describe()
    'chamber 0 drift velocity -10 %'
    >>> Faults(hit_fraction=(1.0, 2.0, 1.0, 1.0))
    Traceback (most recent call last):
    ...
    ValueError: hit_fraction must hold 4 values in [0, 1]
    """

    dead_channels: tuple[tuple[int, int], ...] = ()
    noisy_channels: tuple[tuple[int, int, float], ...] = ()
    hit_fraction: tuple[float, ...] = _ONES
    t0_shift_ns: tuple[float, ...] = _ZEROS
    drift_velocity_scale: tuple[float, ...] = _ONES

    def __post_init__(self) -> None:
        for name, low, high in (("hit_fraction", 0.0, 1.0), ("t0_shift_ns", -1000.0, 1000.0),
                                ("drift_velocity_scale", 0.2, 5.0)):
            values = getattr(self, name)
            if len(values) != _NCH or not all(low <= v <= high for v in values):
                raise ValueError(f"{name} must hold {_NCH} values in [{low:g}, {high:g}]")
        pairs = [c[:2] for c in self.dead_channels] + [c[:2] for c in self.noisy_channels]
        if not all(0 <= c < _NCH and 0 <= ch < det.CHANNELS_PER_CHAMBER for c, ch in pairs):
            raise ValueError(f"a faulty channel is (chamber 0-{_NCH - 1}, channel 0-{det.CHANNELS_PER_CHAMBER - 1})")
        if any(rate < 0 for *_, rate in self.noisy_channels):
            raise ValueError("a noisy channel's added rate must be >= 0")

    @property
    def drops(self) -> bool:
        """Some hits are not recorded (a dead channel, a chamber below its full rate)."""
        return bool(self.dead_channels) or any(f < 1.0 for f in self.hit_fraction)

    @property
    def timing(self) -> bool:
        """A chamber's hit times differ from the nominal ones (t0 shift, drift velocity)."""
        return self.t0_shift_ns != _ZEROS or self.drift_velocity_scale != _ONES

    @property
    def active(self) -> bool:
        """Any fault at all."""
        return self.drops or self.timing or bool(self.noisy_channels)

    def dead_index(self) -> np.ndarray:
        """Dead channels as ``chamber * 64 + channel`` (= ``FPGA * 128 + TDC_CHANNEL``)."""
        return np.array([c * det.CHANNELS_PER_CHAMBER + ch for c, ch in self.dead_channels], np.int64)

    def recorded(self, index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Which hits on chamber channels ``index`` (``chamber * 64 + channel``) are recorded.

        >>> f = Faults(dead_channels=((0, 1),), hit_fraction=(1.0, 0.0, 1.0, 1.0))
        >>> f.recorded(np.array([0, 1, 64, 200]), np.random.default_rng(0)).tolist()
        [True, False, False, True]
        """
        index = np.asarray(index, np.int64)
        keep = ~np.isin(index, self.dead_index())
        fraction = np.asarray(self.hit_fraction)[index // det.CHANNELS_PER_CHAMBER]
        if (fraction < 1.0).any():
            keep &= rng.random(len(index)) < fraction
        return keep

    def noise_hits(self, rng: np.random.Generator, t0_ns: float, t1_ns: float) -> tuple[np.ndarray, np.ndarray]:
        """Times (ns, uniform in ``[t0_ns, t1_ns)``) and channel indices of the noisy channels' added hits.

        >>> t, index = Faults(noisy_channels=((2, 22, 1000.0),)).noise_hits(np.random.default_rng(1), 0.0, 1e9)
        >>> 900 < len(t) < 1100, set(index.tolist())
        (True, {150})
        """
        if not self.noisy_channels:
            return np.zeros(0), np.zeros(0, np.int64)
        index = np.array([c * det.CHANNELS_PER_CHAMBER + ch for c, ch, _ in self.noisy_channels], np.int64)
        counts = rng.poisson(np.array([r for *_, r in self.noisy_channels]) * (t1_ns - t0_ns) * 1e-9)
        index = np.repeat(index, counts)
        return rng.uniform(t0_ns, t1_ns, len(index)), index

    def describe(self) -> str:
        """The faults in words ("no fault" without any).

        >>> Faults(dead_channels=((1, 37),), noisy_channels=((2, 22, 500.0),), t0_shift_ns=(5.0, 0, 0, 0)).describe()
        'chamber 1 channel 37 dead; chamber 2 channel 22 noisy (+500 Hz); chamber 0 t0 shifted by +5 ns'
        """
        parts = [f"chamber {c} channel {ch} dead" for c, ch in self.dead_channels]
        parts += [f"chamber {c} channel {ch} noisy (+{r:g} Hz)" for c, ch, r in self.noisy_channels]
        chambers = range(_NCH)
        parts += [f"chamber {c} records {self.hit_fraction[c] * 100:.0f} % of its hits" for c in chambers
                  if self.hit_fraction[c] < 1.0]
        parts += [f"chamber {c} t0 shifted by {self.t0_shift_ns[c]:+g} ns" for c in chambers if self.t0_shift_ns[c]]
        parts += [f"chamber {c} drift velocity {(self.drift_velocity_scale[c] - 1) * 100:+.0f} %" for c in chambers
                  if self.drift_velocity_scale[c] != 1.0]
        return "; ".join(parts) or "no fault"


def per_chamber(chamber: int, value: float, default: float) -> tuple[float, ...]:
    """A per-chamber tuple: ``value`` for ``chamber``, ``default`` for the others.

    >>> Faults(t0_shift_ns=per_chamber(2, 5.0, 0.0)).t0_shift_ns
    (0.0, 0.0, 5.0, 0.0)
    """
    return tuple(float(value) if c == chamber else float(default) for c in range(_NCH))
