"""Raw DAQ payloads <-> numpy columns, vectorised, with a reason for every reject.

Three payload formats travel on the raw topic (the format is named in the
``format`` message header):

``csv``        one ``HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS`` row per message;
``csv-batch``  many newline-separated rows per message;
``daq64``      packed little-endian 64-bit DAQ words (layout in :mod:`dtlive.core.detector`).

Decoding never raises on bad input: unparseable pieces come back as
:class:`Reject` objects (raw bytes plus a short reason code) and the rest is decoded.

>>> out = decode([b"2,0,5,100,7,3", b"2,0,oops,1,1,1", b"4,1,0,99,0,-0.57"], "csv")
>>> len(out.rows), [r.reason for r in out.rejects]
(2, ['non_numeric'])
>>> decode(encode_daq64(out.rows), "daq64").rows.channel.tolist()
[5, 0]
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dtlive.core import detector as det
from dtlive.core.rows import COLUMNS, Rows

FORMATS = ("csv", "csv-batch", "daq64")
MAX_CSV_ROW_BYTES = 256
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024

# Reason codes of rejected input (stable: they are counted by name in result messages).
REASONS = {
    "empty": "empty payload or row",
    "oversized": "payload or row larger than the allowed size",
    "field_count": "a CSV row without exactly 6 fields",
    "non_numeric": "a CSV field that is not a finite number",
    "unknown_head": "HEAD is not one of 0-5",
    "out_of_range": "a hit (HEAD 2) field is not an integer inside its valid range",
    "truncated_word": "trailing bytes that do not make a whole 64-bit word",
    "unknown_format": "the format header names no known payload format",
    "late": "a hit whose event-time window was already closed",
    "orbit_out_of_range": "a hit far ahead of its partition's stream, with no evidence the stream moved there",
    "bad_epoch": "a message whose orbit_epoch header is not a plausible UNIX time (not used)",
    "error": "the batch made a processing step fail (see the detail header)",
}


@dataclass(frozen=True)
class Reject:
    """A piece of input that could not be used, kept whole for the dead-letter topic.

    >>> r = decode([b"2,0,1,100,5"], "csv").rejects[0]
    >>> r.reason, r.payload, r.partition, r.offset
    ('field_count', b'2,0,1,100,5', 0, 0)
    """

    reason: str
    payload: bytes
    partition: int = 0
    offset: int = -1
    detail: str = ""


@dataclass
class Decoded:
    """The decoded rows of some payloads, and what was rejected.

    >>> d = decode([b"2,0,1,100,5,6", b""], "csv")
    >>> d.rows.channel.tolist(), [r.reason for r in d.rejects]
    ([1], ['empty'])
    """

    rows: Rows
    rejects: list[Reject] = field(default_factory=list)


def decode(
    payloads: Sequence[bytes],
    fmt: str,
    partitions: Sequence[int] | np.ndarray | None = None,
    offsets: Sequence[int] | np.ndarray | None = None,
) -> Decoded:
    """Decode payloads all of one format into :class:`Rows`; never raises on bad input.

    ``partitions``/``offsets`` (one per payload) are copied onto every row the
    payload yields, and onto its rejects.

    >>> d = decode([b"2,0,1,100,5,6\\n2,1,7,100,9,x", b"2,0,3,101,0,0"], "csv", partitions=[4, 4], offsets=[10, 11])
    >>> d.rows.orbit.tolist(), d.rows.offset.tolist()
    ([100, 101], [10, 11])
    >>> [(r.reason, r.payload, r.offset) for r in d.rejects]
    [('non_numeric', b'2,1,7,100,9,x', 10)]
    >>> decode([b"\\x00"], "protobuf").rejects[0].reason
    'unknown_format'
    """
    n = len(payloads)
    parts = np.zeros(n, np.int32) if partitions is None else np.asarray(partitions, np.int32)
    offs = np.arange(n, dtype=np.int64) if offsets is None else np.asarray(offsets, np.int64)
    if fmt in ("csv", "csv-batch"):
        return _decode_csv(payloads, parts, offs)
    if fmt == "daq64":
        return _decode_daq64(payloads, parts, offs)
    shown = fmt if len(fmt) <= 40 else fmt[:40] + "..."
    return Decoded(
        Rows.empty(),
        [
            Reject("unknown_format", bytes(p), int(a), int(b), f"format {shown!r}")
            for p, a, b in zip(payloads, parts, offs)
        ],
    )


# --- CSV ------------------------------------------------------------------------------------------------------


def _decode_csv(payloads: Sequence[bytes], parts: np.ndarray, offs: np.ndarray) -> Decoded:
    rejects: list[Reject] = []
    sizes = np.fromiter(map(len, payloads), np.int64, len(payloads))
    too_big = sizes > MAX_PAYLOAD_BYTES
    if too_big.any():
        rejects += [
            Reject("oversized", bytes(payloads[int(i)]), int(parts[i]), int(offs[i])) for i in np.flatnonzero(too_big)
        ]
        keep = np.flatnonzero(~too_big)
        payloads, parts, offs = [payloads[int(i)] for i in keep], parts[keep], offs[keep]

    t = _Lines.of(payloads)
    lengths = t.lengths
    empty = lengths == 0
    # A message made only of empty lines is an empty payload; blank lines inside a batch are skipped.
    msg_has_content = np.bincount(t.msg[~empty], minlength=len(payloads)) > 0
    for i in np.flatnonzero(~msg_has_content):
        rejects.append(Reject("empty", bytes(payloads[int(i)]), int(parts[i]), int(offs[i])))
    is_header = t.starts_with(b"HEAD")
    bad_size = lengths > MAX_CSV_ROW_BYTES
    commas, strays = t.count(_IS_COMMA, _NOT_NUMBER_BYTE)
    bad_count = (commas != len(det.FIELDS) - 1) & ~empty & ~is_header & ~bad_size
    not_number = strays > 0  # anything but digits, signs, '.', 'e', ',' and blanks
    for reason, mask in (("oversized", bad_size), ("field_count", bad_count)):
        rejects += [Reject(reason, t.line(i), int(parts[t.msg[i]]), int(offs[t.msg[i]])) for i in np.flatnonzero(mask)]
    usable = ~(empty | is_header | bad_size | bad_count)
    for i in np.flatnonzero(usable & not_number):
        rejects.append(Reject("non_numeric", t.line(i), int(parts[t.msg[i]]), int(offs[t.msg[i]])))
    good = np.flatnonzero(usable & ~not_number)
    values, bad_numeric = _parse_numbers(t, good)
    if bad_numeric.any():
        rejects += [
            Reject("non_numeric", t.line(good[i]), int(parts[t.msg[good[i]]]), int(offs[t.msg[good[i]]]))
            for i in np.flatnonzero(bad_numeric)
        ]
        good, values = good[~bad_numeric], values[~bad_numeric]
    msg = t.msg[good]
    head = values[:, 0]
    ok, reasons = _validate(head, values[:, 1:])
    for i in np.flatnonzero(~ok):
        rejects.append(Reject(str(reasons[i]), t.line(good[i]), int(parts[msg[i]]), int(offs[msg[i]])))
    values, msg = values[ok], msg[ok]
    cols = {}
    for j, name in enumerate(COLUMNS):
        col = values[:, j]
        cols[name] = col.astype(np.int64) if np.array_equal(col, np.round(col)) and (abs(col) < 2.0**63).all() else col
    rows = Rows(**cols, partition=parts[msg], offset=offs[msg])
    rejects.sort(key=lambda r: (r.partition, r.offset))
    return Decoded(rows, rejects)


_IS_COMMA = np.zeros(256, bool)
_IS_COMMA[ord(",")] = True
_NOT_NUMBER_BYTE = np.ones(256, bool)
_NOT_NUMBER_BYTE[np.frombuffer(b"0123456789+-.eE, \t\r", np.uint8)] = False


@dataclass
class _Lines:
    r"""The lines of all payloads of a batch as offsets into one buffer: per-line facts without a Python loop.

    >>> t = _Lines.of([b"1,2\r\n3", b"HEAD,x"])
    >>> t.lengths.tolist(), t.msg.tolist(), t.count(_IS_COMMA)[0].tolist(), t.starts_with(b"HEAD").tolist()
    ([3, 1, 6], [0, 0, 1], [1, 0, 1], [False, False, True])
    """

    blob: bytes  # the payloads (CRLF -> LF) joined by newlines
    starts: np.ndarray  # first byte of each line in blob
    lengths: np.ndarray  # bytes of each line, without its newline
    msg: np.ndarray  # index of the payload each line came from

    @classmethod
    def of(cls, payloads: Sequence[bytes]) -> _Lines:
        blob = b"\n".join(payloads)
        if b"\r" in blob:
            payloads = [bytes(p).replace(b"\r\n", b"\n") for p in payloads]
            blob = b"\n".join(payloads)
        buf = np.frombuffer(blob, np.uint8)
        newline = np.flatnonzero(buf == ord("\n"))
        starts = np.concatenate(([0], newline + 1))
        lengths = np.concatenate((newline, [len(buf)])) - starts
        sizes = np.fromiter(map(len, payloads), np.int64, len(payloads))
        msg_starts = np.concatenate(([0], np.cumsum(sizes[:-1] + 1)))
        msg = np.searchsorted(msg_starts, starts, side="right") - 1
        return cls(blob, starts, lengths, msg)

    def __len__(self) -> int:
        return len(self.starts)

    def count(self, *byte_classes: np.ndarray) -> tuple[np.ndarray, ...]:
        """How many bytes of each line are in each of ``byte_classes`` (256-entry bool tables, at most 4).

        One pass for all classes: each class counts in its own 16 bits of one int64 sum, so the counts are
        exact for lines shorter than 65,536 bytes (far past ``MAX_CSV_ROW_BYTES``; longer lines are rejected).
        """
        weights = sum((c.astype(np.int64) << (16 * k) for k, c in enumerate(byte_classes)), np.zeros(256, np.int64))
        # each line's bytes run from its start to the next line's, its newline included (the last one's is a pad)
        sums = np.add.reduceat(weights[np.frombuffer(self.blob + b"\n", np.uint8)], self.starts)
        sums -= weights[ord("\n")]
        return tuple((sums >> (16 * k)) & 0xFFFF for k in range(len(byte_classes)))

    def starts_with(self, prefix: bytes) -> np.ndarray:
        buf = np.frombuffer(self.blob + bytes(len(prefix)), np.uint8)  # padded: no index past the end
        out = self.lengths >= len(prefix)
        for k, byte in enumerate(prefix):
            out &= buf[self.starts + k] == byte
        return out

    def line(self, i: int | np.integer) -> bytes:
        return self.blob[self.starts[i] : self.starts[i] + self.lengths[i]]

    def joined(self, rows: np.ndarray) -> bytes:
        """The given lines (sorted indices) joined by newlines, cut from the buffer without a loop."""
        if len(rows) == len(self):
            return self.blob
        keep = np.zeros(len(self), bool)
        keep[rows] = True
        per_byte = np.repeat(keep, self.lengths + 1)[: len(self.blob)]  # each line with its newline
        return np.frombuffer(self.blob, np.uint8)[per_byte].tobytes()


def _parse_numbers(t: _Lines, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse the given 6-field lines to float64 (n, 6); also return a mask of rows that are not all finite."""
    if not len(rows):
        return np.zeros((0, 6)), np.zeros(0, bool)
    import pandas as pd  # its C parser; imported on first use so that daq64 services never load it

    try:
        values = pd.read_csv(
            io.BytesIO(t.joined(rows)),
            header=None,
            dtype=np.float64,
            engine="c",
            na_filter=True,
            skip_blank_lines=False,
        ).to_numpy()
        if values.shape == (len(rows), 6):
            return values, ~np.isfinite(values).all(axis=1)
    except (ValueError, pd.errors.ParserError):
        pass
    values = np.full((len(rows), 6), np.nan)  # slow path, only for batches holding a bad row
    for j, i in enumerate(rows):
        with contextlib.suppress(ValueError):
            values[j] = [float(x) for x in t.line(i).split(b",")]
    return values, ~np.isfinite(values).all(axis=1)


_LIMITS = np.array([det.N_FPGA - 1, det.MAX_CHANNEL, det.MAX_ORBIT, det.MAX_BX, det.MAX_TDC])


def _validate(head: np.ndarray, fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which rows are usable, and the reason code for those that are not."""
    known = np.isin(head, (det.HIT_HEAD, *det.ANCILLARY_HEADS))
    is_hit = head == det.HIT_HEAD
    in_range = ((fields >= 0) & (fields <= _LIMITS) & (fields == np.round(fields))).all(axis=1)
    ok = known & (~is_hit | in_range)
    reason = np.where(~known, "unknown_head", "out_of_range")
    return ok, reason


_KNOWN_HEAD = np.isin(np.arange(8), (det.HIT_HEAD, *det.ANCILLARY_HEADS))


def _validate_words(cols: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_validate` for unpacked words: fields are whole and non-negative by construction, and the
    32-bit orbit and 5-bit TDC cannot exceed their limits, so only three bounds are left to check."""
    head = cols["head"]
    is_hit = head == det.HIT_HEAD
    known = _KNOWN_HEAD[head]  # HEAD is 3 bits: a lookup table instead of isin
    in_range = (cols["fpga"] <= det.N_FPGA - 1) & (cols["channel"] <= det.MAX_CHANNEL) & (cols["bx"] <= det.MAX_BX)
    ok = known & (~is_hit | in_range)
    if ok.all():
        return ok, np.empty(0, dtype="<U12")
    return ok, np.where(~known, "unknown_head", "out_of_range")


def encode_csv(rows: Rows) -> list[bytes]:
    """One CSV row (bytes, no newline) per row; ancillary floats keep 6 decimals.

    >>> encode_csv(Rows.from_columns(head=[2], fpga=[1], channel=[3], orbit=[4], bx=[5], tdc=[6]))
    [b'2,1,3,4,5,6']
    """
    if len(rows) == 0:
        return []
    text = [getattr(rows, c).astype(np.int64).astype(str) for c in COLUMNS]
    tdc = rows.tdc
    if tdc.dtype.kind == "f":
        frac = np.flatnonzero(tdc != np.round(tdc))
        if len(frac):
            text[5] = text[5].astype(object)
            text[5][frac] = [f"{v:.6f}" for v in tdc[frac]]
    joined = text[0].astype(object)
    for col in text[1:]:
        joined = joined + "," + col.astype(object)
    return [s.encode() for s in joined]


def encode_csv_batches(rows: Rows, rows_per_message: int) -> list[bytes]:
    """Newline-separated CSV rows, ``rows_per_message`` per payload.

    >>> rows = Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 1], channel=[1, 2, 3], orbit=[7, 7, 8], bx=[0, 1, 2],
    ...                          tdc=[0, 0, 0])
    >>> encode_csv_batches(rows, 2)
    [b'2,0,1,7,0,0\\n2,0,2,7,1,0', b'2,1,3,8,2,0']
    """
    lines = encode_csv(rows)
    return [b"\n".join(lines[i : i + rows_per_message]) for i in range(0, len(lines), rows_per_message)]


# --- daq64 ----------------------------------------------------------------------------------------------------


def _decode_daq64(payloads: Sequence[bytes], parts: np.ndarray, offs: np.ndarray) -> Decoded:
    rejects: list[Reject] = []
    sizes = np.fromiter((len(p) for p in payloads), np.int64, len(payloads))
    bad = (sizes == 0) | (sizes > MAX_PAYLOAD_BYTES) | (sizes % 8 != 0)
    if bad.any():
        kept = []
        for i in range(len(payloads)):
            p, a, b = payloads[i], int(parts[i]), int(offs[i])
            if sizes[i] == 0:
                rejects.append(Reject("empty", b"", a, b))
            elif sizes[i] > MAX_PAYLOAD_BYTES:
                rejects.append(Reject("oversized", bytes(p), a, b))
            else:
                whole = len(p) - len(p) % 8
                if whole < len(p):
                    rejects.append(Reject("truncated_word", bytes(p[whole:]), a, b, f"{len(p) % 8} trailing bytes"))
                kept.append((i, p[:whole]))
        keep = np.array([i for i, _ in kept], np.int64)
        payloads, parts, offs = [p for _, p in kept], parts[keep], offs[keep]
        sizes = np.fromiter((len(p) for p in payloads), np.int64, len(payloads))
    words = np.frombuffer(b"".join(payloads), dtype="<u8")
    row_parts, row_offs = np.repeat(parts, sizes // 8), np.repeat(offs, sizes // 8)
    cols = unpack_words(words)
    ok, reason = _validate_words(cols)
    if not ok.all():
        for row in np.flatnonzero(~ok):
            rejects.append(Reject(str(reason[row]), words[row : row + 1].tobytes(), int(row_parts[row]),
                                  int(row_offs[row])))
        cols = {k: v[ok] for k, v in cols.items()}
        row_parts, row_offs = row_parts[ok], row_offs[ok]
    return Decoded(Rows(**cols, partition=row_parts, offset=row_offs), rejects)


_WORD_FIELDS = dict(zip(COLUMNS, ("HEAD", "FPGA", "TDC_CHANNEL", "ORBIT_CNT", "BX_COUNTER", "TDC_MEAS")))


def unpack_words(words: np.ndarray) -> dict[str, np.ndarray]:
    """Split 64-bit DAQ words into int64 columns (``head``, ``fpga``, ...).

    >>> rows = Rows.from_columns(head=[2], fpga=[1], channel=[70], orbit=[123456], bx=[3000], tdc=[29])
    >>> cols = unpack_words(pack_words(rows))
    >>> {k: v.tolist() for k, v in cols.items()}
    {'head': [2], 'fpga': [1], 'channel': [70], 'orbit': [123456], 'bx': [3000], 'tdc': [29]}
    """
    out = {}
    for col, name in _WORD_FIELDS.items():
        shift, bits = det.WORD_LAYOUT[name]
        col_values = np.right_shift(words, np.uint64(shift))  # one new array per column, masked in place
        np.bitwise_and(col_values, np.uint64((1 << bits) - 1), out=col_values)
        out[col] = col_values.view(np.int64)  # fields are < 2**32: the same bits as int64, no copy
    return out


def pack_words(rows: Rows) -> np.ndarray:
    """Pack rows into 64-bit DAQ words (ancillary floats are truncated to the field's bits).

    >>> words = pack_words(Rows.from_columns(head=[2], fpga=[0], channel=[1], orbit=[1], bx=[0], tdc=[3]))
    >>> words.dtype, hex(int(words[0]))
    (dtype('uint64'), '0x4002000000020003')
    """
    words = np.zeros(len(rows), np.uint64)
    for col, name in _WORD_FIELDS.items():
        shift, bits = det.WORD_LAYOUT[name]
        value = getattr(rows, col).astype(np.int64).astype(np.uint64) & np.uint64((1 << bits) - 1)
        words |= value << np.uint64(shift)
    return words


def encode_daq64(rows: Rows, words_per_message: int | None = None) -> list[bytes]:
    """Little-endian packed words, all in one payload or ``words_per_message`` per payload.

    >>> rows = Rows.from_columns(head=[2, 2, 2], fpga=[0, 0, 1], channel=[1, 2, 3], orbit=[7, 7, 8], bx=[0, 1, 2],
    ...                          tdc=[0, 0, 0])
    >>> [len(p) for p in encode_daq64(rows)], [len(p) for p in encode_daq64(rows, words_per_message=2)]
    ([24], [16, 8])
    >>> decode(encode_daq64(rows, 2), "daq64").rows.channel.tolist()
    [1, 2, 3]
    """
    raw = pack_words(rows).astype("<u8").tobytes()
    step = 8 * (words_per_message or max(len(rows), 1))
    return [raw[i : i + step] for i in range(0, len(raw), step)] or []


def read_csv(path_or_url: str, **storage_options) -> Rows:
    """Read a DAQ CSV file (local path or any fsspec URL, e.g. ``s3://...``) into :class:`Rows`.

    Rows that do not decode are dropped here; use :func:`decode` to see why.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "hits.csv"
    >>> _ = path.write_text("HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS\\n2,0,1,100,5,6\\n")
    >>> read_csv(str(path)).orbit.tolist()
    [100]
    """
    import fsspec

    with fsspec.open(path_or_url, "rb", **storage_options) as f:
        data = f.read()
    return decode([data], "csv-batch").rows
