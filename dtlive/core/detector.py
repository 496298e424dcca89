"""The drift-tube telescope: every detector fact in one place.

Nothing else in dtlive hard-codes a channel number, a geometry constant or a
time unit; import them from here.

>>> from dtlive.core import detector as det
>>> det.chamber_of(np.array([0, 1]), np.array([5, 70]))
array([0, 3])
>>> det.hit_time_ns(np.array([1]), np.array([0]), np.array([30]))
array([89125.])
"""

from __future__ import annotations

import numpy as np

# --- DAQ record ---------------------------------------------------------------
FIELDS: tuple[str, ...] = ("HEAD", "FPGA", "TDC_CHANNEL", "ORBIT_CNT", "BX_COUNTER", "TDC_MEAS")
CSV_HEADER = ",".join(FIELDS)
HIT_HEAD = 2
ANCILLARY_HEADS: tuple[int, ...] = (0, 1, 3, 4, 5)

# Valid ranges of the fields of a hit (HEAD == 2) row, inclusive.
N_FPGA = 2
MAX_CHANNEL = 138
MAX_BX = 3563
MAX_TDC = 31
MAX_ORBIT = 2**32 - 1

# --- channels and chambers ----------------------------------------------------
N_CHAMBERS = 4
CHANNELS_PER_CHAMBER = 64
CHAMBER_CHANNELS = 128  # channels 0..127 of an FPGA belong to chambers
SCINT_FPGA, SCINT_CHANNEL = 1, 128  # scintillator (t0)
TRIGGER_CHANNEL = 138  # internal trigger / OR word
CHAMBERS = np.arange(N_CHAMBERS)

# --- geometry -----------------------------------------------------------------
N_LAYERS = 4
CELLS_PER_LAYER = 16
CELL_WIDTH_MM = 42.0
CELL_HEIGHT_MM = 13.0
# channel % 4 -> layer number (1 = bottom ... 4 = top)
LAYER_OF_CHANNEL_MOD4 = np.array([4, 2, 3, 1])
LAYER_Z_MM = {1: -19.5, 2: -6.5, 3: 6.5, 4: 19.5}
LAYER_X_SHIFT_MM = {1: -294.0, 2: -315.0, 3: -294.0, 4: -315.0}
CHAMBER_HEIGHT_MM = np.array([219.8, 977.3, 1035.6, 1819.8])
ROTATED_CHAMBER = 1  # chamber 1 is rotated by 90 degrees; 0, 2, 3 share one view

# --- time ---------------------------------------------------------------------
BX_PER_ORBIT = 3564
BX_NS = 25.0
TDC_PER_BX = 30
ORBIT_NS = BX_PER_ORBIT * BX_NS  # 89.1 us
ORBIT_S = ORBIT_NS * 1e-9

# --- drift --------------------------------------------------------------------
DRIFT_VELOCITY_MM_PER_NS = 53.8e-3
MAX_DRIFT_NS = CELL_WIDTH_MM / 2 / DRIFT_VELOCITY_MM_PER_NS  # ~390 ns
SCINT_DELAY_NS = 95.0
T0_OFFSET_NS = np.array([95.0 - 1.1, 95.0 + 6.4, 95.0 + 0.5, 95.0 - 2.6])

# --- reconstruction ---------------------------------------------------------------
TDC_NS = BX_NS / TDC_PER_BX  # one TDC count, 0.83 ns
HALF_CELL_MM = CELL_WIDTH_MM / 2  # alternate layers are shifted by this much
EVENT_GAP_NS = 1.1 * MAX_DRIFT_NS  # hits of one muon lie closer than this to the previous one
EVENT_MIN_LAYERS = 3  # a time cluster is a muon event with this many layers of one chamber (or a trigger word)
# Trigger word (FPGA f, channel 138) time minus the meantimer t0 of chamber c of the same muon: the trigger t0 of
# chamber c is t_trigger - TRIGGER_T0_OFFSET_NS[c] (dtlive.core.reco.t0.calibrate_trigger_offset on run 591 up to its
# 210 s pause, 26 s of data; after it the trigger word comes ~150 ns earlier: recalibrate for each setting).
TRIGGER_T0_OFFSET_NS = np.array([372.8, 374.3, 375.8, 375.6])  # +- 2 ns; per event the spread is ~40 ns
TRIGGER_JITTER_NS = 10.0  # spread of a fixed-latency (meantimer) trigger word around t0 + offset, simulated

# --- rates (for the simulator and sanity checks) --------------------------------
TYPICAL_HIT_RATE_HZ = 5000.0
TYPICAL_EMULATOR_ROWS_PER_S = 1000.0


def chamber_of(fpga: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """Chamber (0-3) of each hit, or -1 for special channels (>= 128)."""
    fpga = np.asarray(fpga)
    channel = np.asarray(channel)
    chamber = 2 * fpga + channel // CHANNELS_PER_CHAMBER
    return np.where(channel < CHAMBER_CHANNELS, chamber, -1)


def cell_of(channel: np.ndarray) -> np.ndarray:
    """Cell column (0-15) inside a chamber."""
    return (np.asarray(channel) % CHANNELS_PER_CHAMBER) // 4


def layer_of(channel: np.ndarray) -> np.ndarray:
    """Layer (1 = bottom ... 4 = top) inside a chamber."""
    return LAYER_OF_CHANNEL_MOD4[np.asarray(channel) % 4]


def wire_position_mm(channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local (x, z) of the wire read out by each channel, in mm."""
    layer = layer_of(channel)
    shift = np.array([0.0, *[LAYER_X_SHIFT_MM[k] for k in (1, 2, 3, 4)]])
    z = np.array([0.0, *[LAYER_Z_MM[k] for k in (1, 2, 3, 4)]])
    return cell_of(channel) * CELL_WIDTH_MM + shift[layer], z[layer]


def channel_of(chamber: np.ndarray, layer: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse mapping: (FPGA, TDC_CHANNEL) of a (chamber, layer, cell)."""
    chamber = np.asarray(chamber)
    mod4 = np.array([0, 3, 1, 2, 0])[np.asarray(layer)]  # layer -> channel % 4
    channel = (chamber % 2) * CHANNELS_PER_CHAMBER + np.asarray(cell) * 4 + mod4
    return chamber // 2, channel


def hit_time_ns(orbit: np.ndarray, bx: np.ndarray, tdc: np.ndarray) -> np.ndarray:
    """Absolute hit time in ns: 25 * (ORBIT * 3564 + BX + TDC / 30), float64."""
    orbit = np.asarray(orbit, dtype=np.int64)
    return BX_NS * (orbit * BX_PER_ORBIT + np.asarray(bx, dtype=np.float64) + np.asarray(tdc) / TDC_PER_BX)


def time_in_orbit_ns(bx: np.ndarray, tdc: np.ndarray) -> np.ndarray:
    """Hit time inside its orbit in ns: 25 * (BX + TDC / 30), float64.

    Differences of hits of the same orbit (drift times) use this: the orbit term cancels and would only
    cost precision at ~1e14 ns.

    >>> time_in_orbit_ns(np.array([2]), np.array([15])).tolist()
    [62.5]
    """
    return BX_NS * np.asarray(bx, dtype=np.float64) + np.asarray(tdc) * BX_NS / TDC_PER_BX


def hit_ticks(orbit: np.ndarray, bx: np.ndarray, tdc: np.ndarray) -> np.ndarray:
    """Absolute hit time in TDC counts (``TDC_NS`` each): ``(ORBIT * 3564 + BX) * 30 + TDC``, exact int64.

    Hits of one muon may straddle an orbit boundary; their differences in counts are exact.

    >>> hit_ticks(np.array([1, 2]), np.array([3563, 0]), np.array([29, 0])).tolist()
    [213839, 213840]
    """
    orbit = np.asarray(orbit, dtype=np.int64)
    return (orbit * BX_PER_ORBIT + np.asarray(bx, dtype=np.int64)) * TDC_PER_BX + np.asarray(tdc, dtype=np.int64)


def half_cell_of(channel: np.ndarray) -> np.ndarray:
    """Position of each channel's wire in half cells (21 mm) from the leftmost wire of the chamber, 0-31.

    Layers 1 and 3 have odd positions, layers 2 and 4 even ones: staggered neighbours differ by one.

    >>> half_cell_of(np.array([3, 1, 2, 0, 7])).tolist()  # cell 0 of layers 1, 2, 3, 4; cell 1 of layer 1
    [1, 0, 1, 0, 3]
    """
    x, _ = wire_position_mm(channel)
    return np.rint((x - min(LAYER_X_SHIFT_MM.values())) / HALF_CELL_MM).astype(np.int64)


def orbits_for_seconds(seconds: float) -> int:
    """Whole number of orbits closest to a duration."""
    return max(1, int(round(seconds / ORBIT_S)))


# --- 64-bit DAQ word layout: name -> (first bit, number of bits) -----------------
WORD_LAYOUT: dict[str, tuple[int, int]] = {
    "TDC_MEAS": (0, 5),
    "BX_COUNTER": (5, 12),
    "ORBIT_CNT": (17, 32),
    "TDC_CHANNEL": (49, 9),
    "FPGA": (58, 3),
    "HEAD": (61, 3),
}
