"""Decoding raw DAQ payloads: never crashes, conserves every row, round-trips, real files.

Expectations are computed here independently of :mod:`dtlive.core.decode` (labelled generators,
hand-packed 64-bit words with ``struct``, pandas for the real files).
"""

from __future__ import annotations

import struct
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from datafiles import RUN_CSV
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dtlive.core import detector as det
from dtlive.core.decode import (
    REASONS,
    decode,
    encode_csv,
    encode_csv_batches,
    encode_daq64,
    pack_words,
    read_csv,
    unpack_words,
)
from dtlive.core.rows import COLUMNS, Rows, clean

DATA = RUN_CSV.parent
SAMPLE_CSV = DATA / "stream_sample_2023.csv"
RUN_CSV = DATA / "run000591_hits.csv"
HEADER = b"HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS"

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Valid ranges of a hit, written out from the detector's documentation (not taken from the code under test).
HIT_LIMITS = {"fpga": (0, 1), "channel": (0, 138), "orbit": (0, 2**32 - 1), "bx": (0, 3563), "tdc": (0, 31)}
# TDC bits 0-4, BX 5-16, ORBIT 17-48, CHANNEL 49-57, FPGA 58-60, HEAD 61-63.
BITS = {"tdc": (0, 5), "bx": (5, 12), "orbit": (17, 32), "channel": (49, 9), "fpga": (58, 3), "head": (61, 3)}


def hand_pack(head: int, fpga: int, channel: int, orbit: int, bx: int, tdc: int) -> int:
    return tdc | (bx << 5) | (orbit << 17) | (channel << 49) | (fpga << 58) | (head << 61)


def hand_unpack(word: int) -> dict[str, int]:
    return {name: (word >> first) & ((1 << n) - 1) for name, (first, n) in BITS.items()}


def outcomes(decoded) -> tuple[list, Counter]:
    """(offset, row values) of every decoded row in order, and a Counter of (offset, reason) of rejects."""
    rows = decoded.rows
    got_rows = [
        (int(rows.offset[i]), tuple(float(getattr(rows, c)[i]) for c in COLUMNS)) for i in range(len(rows))
    ]
    return got_rows, Counter((r.offset, r.reason) for r in decoded.rejects)


# --- labelled CSV line generators ------------------------------------------------------------------------------

ints = st.integers


def num_text(v) -> st.SearchStrategy[str]:
    """Several spellings of the same number."""
    if float(v).is_integer() and abs(v) < 1e15:
        iv = int(v)
        return st.sampled_from([str(iv), f"{iv}.0", f"{iv:.6f}", f"+{iv}" if iv >= 0 else str(iv)])
    return st.sampled_from([repr(float(v)), f"{v:.17g}"])


@st.composite
def valid_hit_values(draw):
    return (2, *(draw(ints(lo, hi)) for lo, hi in HIT_LIMITS.values()))


@st.composite
def ancillary_values(draw):
    head = draw(st.sampled_from([0, 1, 3, 4, 5]))
    field = st.one_of(
        ints(-(2**31), 2**33),
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
        ints(-(10**6), 10**6).map(lambda k: k / 1e6),
        st.sampled_from([1e19, -1e19, 2.0**63, 1e300, -1e300, 18504, -0.57373]),  # huge but finite
    )
    return (head, *(draw(field) for _ in range(5)))


@st.composite
def line_of(draw, values_strategy):
    values = draw(values_strategy)
    texts = [draw(num_text(v)) for v in values]
    return ("ok", tuple(float(v) for v in values)), ",".join(texts).encode()


BAD_TOKENS = ["x", "nan", "NaN", "inf", "-inf", "Infinity", "", "1.2.3", "--1", "0x10", "1e", "abc", "None",
              "NA", "True", "False", '"3"', "1_0", "3\x00", "1e400", "-1e999", "\u0661", "#3", "1 2", "."]


@st.composite
def non_numeric_line(draw):
    values = list(draw(st.one_of(valid_hit_values(), ancillary_values())))
    texts = [str(v) for v in values]
    texts[draw(ints(0, 5))] = draw(st.sampled_from(BAD_TOKENS))
    line = ",".join(texts).encode()
    assume(not line.startswith(b"HEAD"))
    return ("non_numeric",), line


@st.composite
def field_count_line(draw):
    n = draw(ints(1, 12).filter(lambda k: k != 6))
    fields = [str(draw(ints(0, 200))) for _ in range(n)]
    return ("field_count",), ",".join(fields).encode()


@st.composite
def unknown_head_line(draw):
    head = draw(st.one_of(ints(6, 10**9), ints(-(10**9), -1), st.sampled_from([2.5, -0.5, 1e20, 5.000001])))
    rest = draw(valid_hit_values())[1:]
    return ("unknown_head",), ",".join(str(v) for v in (head, *rest)).encode()


@st.composite
def out_of_range_line(draw):
    values = list(draw(valid_hit_values()))
    k = draw(ints(1, 5))
    name = list(HIT_LIMITS)[k - 1]
    lo, hi = HIT_LIMITS[name]
    values[k] = draw(st.one_of(
        ints(hi + 1, hi + 10**12), ints(-(10**6), lo - 1), st.sampled_from([lo + 0.5, hi - 0.25, 1e300, 2.0**64])
    ))
    return ("out_of_range",), ",".join(str(v) for v in values).encode()


@st.composite
def oversized_line(draw):
    body = draw(st.sampled_from([b"2,0,5,100,7,", b"x,", b""]))
    return ("oversized",), body + b"0" * draw(ints(257, 600)) + b"3"  # rows above 256 bytes are oversized


labelled_line = st.one_of(
    line_of(valid_hit_values()),
    line_of(valid_hit_values()),
    line_of(ancillary_values()),
    non_numeric_line(),
    field_count_line(),
    unknown_head_line(),
    out_of_range_line(),
    oversized_line(),
)
# Extra items that produce nothing: the header line and blank lines.
filler = st.sampled_from([("header",), ("blank",)])


def filler_bytes(item) -> bytes:
    return HEADER if item[0] == "header" else b""


@st.composite
def csv_batch_payloads(draw):
    """Payloads of newline-separated labelled lines, plus the expected outcomes."""
    n_payloads = draw(ints(0, 8))
    payloads, expected_rows, expected_rejects = [], [], Counter()
    offsets = draw(st.lists(ints(0, 10**12), min_size=n_payloads, max_size=n_payloads, unique=True))
    for off in offsets:
        items = draw(st.lists(st.one_of(labelled_line, filler.map(lambda f: (f, filler_bytes(f)))), max_size=8))
        eol = draw(st.sampled_from([b"\n", b"\r\n"]))
        trailing = draw(st.booleans())
        payload = eol.join(line for _, line in items) + (eol if trailing and items else b"")
        payloads.append(payload)
        labels = [label for label, _ in items]
        if all(label[0] == "blank" for label in labels):
            expected_rejects[(off, "empty")] += 1
            continue
        for label in labels:
            if label[0] == "ok":
                expected_rows.append((off, label[1]))
            elif label[0] not in ("header", "blank"):
                expected_rejects[(off, label[0])] += 1
    return payloads, offsets, expected_rows, expected_rejects


# --- never crashes -------------------------------------------------------------------------------------------


def check_invariants(out, payloads, fmt, partitions, offsets):
    rows = out.rows
    n = len(rows)
    for c in (*COLUMNS, "partition", "offset"):
        assert len(getattr(rows, c)) == n
    assert {r.reason for r in out.rejects} <= set(REASONS)
    located = set(zip(partitions, offsets))
    assert {(int(p), int(o)) for p, o in zip(rows.partition, rows.offset)} <= located
    assert {(r.partition, r.offset) for r in out.rejects} <= located
    for r in out.rejects:
        assert isinstance(r.payload, bytes)
    heads = set(np.asarray(rows.head, float).tolist())
    assert heads <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
    hits, _ = clean(rows)
    for c, (lo, hi) in HIT_LIMITS.items():
        v = getattr(hits, c)
        assert v.dtype == np.int64
        assert ((v >= lo) & (v <= hi)).all()
    if fmt not in ("csv", "csv-batch", "daq64"):
        assert n == 0
        assert [r.reason for r in out.rejects] == ["unknown_format"] * len(payloads)


@FAST
@given(
    payloads=st.lists(st.binary(max_size=80), max_size=12),
    fmt=st.one_of(st.sampled_from(["csv", "csv-batch", "daq64"]), st.text(max_size=60)),
    data=st.data(),
)
def test_arbitrary_bytes_never_crash(payloads, fmt, data):
    n = len(payloads)
    partitions = data.draw(st.lists(ints(0, 50), min_size=n, max_size=n))
    offsets = data.draw(st.lists(ints(0, 2**62), min_size=n, max_size=n))
    out = decode(payloads, fmt, partitions, offsets)
    check_invariants(out, payloads, fmt, partitions, offsets)


csv_ish_bytes = st.lists(
    st.sampled_from(list(b"0123456789,,,,,.-+eE \t\"xTruenaif_#\r\n\x00\xff")), max_size=60
).map(bytes)


@FAST
@given(payloads=st.lists(csv_ish_bytes, max_size=15), fmt=st.sampled_from(["csv", "csv-batch"]))
def test_csv_like_garbage_never_crashes(payloads, fmt):
    out = decode(payloads, fmt)
    check_invariants(out, payloads, fmt, [0] * len(payloads), list(range(len(payloads))))


@FAST
@given(lines=st.lists(csv_ish_bytes.map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=15))
def test_one_row_per_message_gives_exactly_one_outcome_each(lines):
    """csv: a non-empty, non-header single-line payload yields exactly one row or one reject."""
    out = decode(lines, "csv")
    per_offset = Counter(out.rows.offset.tolist()) + Counter(r.offset for r in out.rejects)
    for i, line in enumerate(lines):
        expected = 0 if line.startswith(b"HEAD") else 1
        assert per_offset[i] == expected, (line, out)


token = st.one_of(
    st.sampled_from(BAD_TOKENS), ints(-5, 200).map(str), st.sampled_from([" 3", "3 ", "1e2", "0.5", "-0", "1.e1"])
)
six_token_line = st.lists(token, min_size=6, max_size=6).map(lambda t: ",".join(t).encode())
no_eol_line = st.one_of(six_token_line, csv_ish_bytes.map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")))


@FAST
@given(lines=st.lists(no_eol_line, min_size=1, max_size=12))
def test_outcome_of_a_row_does_not_depend_on_its_neighbours(lines):
    """Decoding rows together gives each row the outcome it gets alone."""
    lines = [line for line in lines if line and not line.startswith(b"HEAD")]
    together_rows, together_rejects = outcomes(decode(lines, "csv"))
    alone_rows, alone_rejects = [], Counter()
    for i, line in enumerate(lines):
        rows, rejects = outcomes(decode([line], "csv", offsets=[i]))
        alone_rows += rows
        alone_rejects += rejects
    assert together_rejects == alone_rejects
    assert together_rows == alone_rows


@pytest.mark.parametrize("token", ['"3"', "True", "False", "1_0", " 3\x00"])
def test_csv_accepts_only_plain_numbers_whatever_the_batch(token):
    """Quotes, booleans and underscores are not numbers in a DAQ row: rejected alone and in a batch."""
    row = f"2,0,5,100,7,{token}".encode()
    alone = decode([row], "csv")
    in_batch = decode([row, b"2,0,x,1,1,1", b"2,0,5,100,7,3"], "csv")
    assert [r.reason for r in alone.rejects] == ["non_numeric"]
    assert len(alone.rows) == 0
    assert sorted((r.offset, r.reason) for r in in_batch.rejects) == [(0, "non_numeric"), (1, "non_numeric")]
    assert in_batch.rows.tdc.tolist() == [3]


# --- accounting --------------------------------------------------------------------------------------------


@FAST
@given(case=csv_batch_payloads(), data=st.data())
def test_csv_batch_accounting_and_values(case, data):
    payloads, offsets, expected_rows, expected_rejects = case
    partitions = data.draw(st.lists(ints(0, 9), min_size=len(payloads), max_size=len(payloads)))
    out = decode(payloads, "csv-batch", partitions, offsets)
    got_rows, got_rejects = outcomes(out)
    assert got_rejects == expected_rejects
    assert got_rows == expected_rows
    # decoded + rejected == non-empty, non-header lines (+ one per payload made only of blank lines)
    assert len(out.rows) + len(out.rejects) == len(expected_rows) + sum(expected_rejects.values())
    part_of = dict(zip(offsets, partitions))
    assert all(part_of[int(o)] == int(p) for o, p in zip(out.rows.offset, out.rows.partition))
    assert all(part_of[r.offset] == r.partition for r in out.rejects)


@FAST
@given(items=st.lists(st.one_of(labelled_line, filler.map(lambda f: (f, filler_bytes(f)))), max_size=25))
def test_csv_one_row_per_message_accounting(items):
    payloads = [line for _, line in items]
    out = decode(payloads, "csv")
    expected_rows = [(i, label[1]) for i, (label, _) in enumerate(items) if label[0] == "ok"]
    expected_rejects = Counter(
        (i, "empty" if label[0] == "blank" else label[0])
        for i, (label, _) in enumerate(items)
        if label[0] not in ("ok", "header")
    )
    got_rows, got_rejects = outcomes(out)
    assert got_rejects == expected_rejects
    assert got_rows == expected_rows
    n_content = sum(1 for label, _ in items if label[0] not in ("header", "blank"))
    assert len(out.rows) + len(out.rejects) - got_rejects_of(out, "empty") == n_content


def got_rejects_of(out, reason: str) -> int:
    return sum(1 for r in out.rejects if r.reason == reason)


@st.composite
def daq64_case(draw):
    """Payloads of labelled 64-bit words (hand-packed), with truncated tails and empty payloads."""
    payloads, expected_rows, expected_rejects = [], [], Counter()
    for off in range(draw(ints(0, 6))):
        if draw(st.integers(0, 9)) == 0:
            payloads.append(b"")
            expected_rejects[(off, "empty")] += 1
            continue
        raw = b""
        for _ in range(draw(ints(0, 6))):
            kind = draw(st.sampled_from(["hit", "ancillary", "unknown_head", "out_of_range"]))
            f = {name: draw(ints(0, (1 << n) - 1)) for name, (_, n) in BITS.items()}
            if kind == "hit":
                f.update({k: draw(ints(lo, min(hi, (1 << BITS[k][1]) - 1))) for k, (lo, hi) in HIT_LIMITS.items()})
                f["head"] = 2
            elif kind == "ancillary":
                f["head"] = draw(st.sampled_from([0, 1, 3, 4, 5]))
            elif kind == "unknown_head":
                f["head"] = draw(st.sampled_from([6, 7]))
            else:
                f["head"] = 2
                f.update(fpga=draw(ints(0, 1)), channel=draw(ints(0, 138)), bx=draw(ints(0, 3563)))
                bad = draw(st.sampled_from(["fpga", "channel", "bx"]))
                f[bad] = draw(ints(HIT_LIMITS[bad][1] + 1, (1 << BITS[bad][1]) - 1))
            raw += struct.pack("<Q", hand_pack(f["head"], f["fpga"], f["channel"], f["orbit"], f["bx"], f["tdc"]))
            if kind in ("hit", "ancillary"):
                expected_rows.append((off, tuple(float(f[c]) for c in COLUMNS)))
            else:
                expected_rejects[(off, kind)] += 1
        tail = draw(st.binary(max_size=7))
        if tail:
            expected_rejects[(off, "truncated_word")] += 1
        elif not raw:
            expected_rejects[(off, "empty")] += 1
        payloads.append(raw + tail)
    return payloads, expected_rows, expected_rejects


@FAST
@given(case=daq64_case())
def test_daq64_accounting_and_values(case):
    payloads, expected_rows, expected_rejects = case
    out = decode(payloads, "daq64")
    got_rows, got_rejects = outcomes(out)
    assert got_rejects == expected_rejects
    assert got_rows == expected_rows
    whole_words = sum(len(p) // 8 for p in payloads)
    word_rejects = sum(n for (_, reason), n in got_rejects.items() if reason in ("unknown_head", "out_of_range"))
    assert len(out.rows) + word_rejects == whole_words
    for r in out.rejects:
        if r.reason == "truncated_word":
            assert 0 < len(r.payload) < 8
        elif r.reason in ("unknown_head", "out_of_range"):
            assert len(r.payload) == 8


@FAST
@given(payloads=st.lists(st.binary(max_size=70), max_size=10))
def test_daq64_arbitrary_bytes_decode_like_a_hand_unpacker(payloads):
    out = decode(payloads, "daq64")
    expected = []
    for off, p in enumerate(payloads):
        for k in range(len(p) // 8):
            f = hand_unpack(struct.unpack("<Q", p[8 * k : 8 * k + 8])[0])
            hit_ok = all(lo <= f[c] <= hi for c, (lo, hi) in HIT_LIMITS.items())
            if f["head"] in (0, 1, 3, 4, 5) or (f["head"] == 2 and hit_ok):
                expected.append((off, tuple(float(f[c]) for c in COLUMNS)))
    assert outcomes(out)[0] == expected
    assert Counter(r.offset for r in out.rejects if r.reason == "truncated_word") == Counter(
        i for i, p in enumerate(payloads) if len(p) % 8
    )
    assert Counter(r.offset for r in out.rejects if r.reason == "empty") == Counter(
        i for i, p in enumerate(payloads) if not p
    )


def test_unknown_format_rejects_every_payload():
    out = decode([b"2,0,5,100,7,3", b""], "CSV", partitions=[3, 4], offsets=[10, 11])
    assert len(out.rows) == 0
    assert [(r.reason, r.partition, r.offset, r.payload) for r in out.rejects] == [
        ("unknown_format", 3, 10, b"2,0,5,100,7,3"),
        ("unknown_format", 4, 11, b""),
    ]


def test_specific_reasons_and_crlf():
    payload = b"HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS\r\n2,0,5,100,7,3\r\n\r\n2,1,5\r\n4,1,0,99,0,nan\r\n"
    out = decode([payload, b"", b"\r\n"], "csv-batch")
    assert out.rows.to_pandas().values.tolist() == [[2, 0, 5, 100, 7, 3]]
    assert sorted((r.offset, r.reason) for r in out.rejects) == [
        (0, "field_count"), (0, "non_numeric"), (1, "empty"), (2, "empty")
    ]
    assert {r.payload for r in out.rejects if r.reason == "field_count"} == {b"2,1,5"}


def test_oversized_payload_is_one_reject():
    from dtlive.core.decode import MAX_PAYLOAD_BYTES

    big = b"2,0,5,100,7,3\n" * (MAX_PAYLOAD_BYTES // 14 + 2)
    assert len(big) > MAX_PAYLOAD_BYTES
    out = decode([big, b"2,0,5,100,7,3"], "csv-batch")
    assert [(r.offset, r.reason) for r in out.rejects] == [(0, "oversized")]
    assert out.rows.offset.tolist() == [1]


# --- round trips ---------------------------------------------------------------------------------------------


hit_columns = st.lists(valid_hit_values(), min_size=0, max_size=60).map(
    lambda vals: {c: np.array([v[j] for v in vals], np.int64) for j, c in enumerate(COLUMNS)}
)


@FAST
@given(cols=hit_columns, per_message=ints(1, 9))
def test_csv_round_trip_of_hits(cols, per_message):
    rows = Rows.from_columns(**cols)
    for fmt, payloads in (("csv", encode_csv(rows)), ("csv-batch", encode_csv_batches(rows, per_message))):
        out = decode(payloads, fmt)
        assert out.rejects == []
        for c in COLUMNS:
            got = getattr(out.rows, c)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, cols[c])


@FAST
@given(cols=hit_columns, per_message=st.one_of(st.none(), ints(1, 9)))
def test_daq64_round_trip_of_hits(cols, per_message):
    rows = Rows.from_columns(**cols)
    payloads = encode_daq64(rows, per_message)
    assert sum(len(p) for p in payloads) == 8 * len(rows)
    out = decode(payloads, "daq64")
    assert out.rejects == []
    for c in COLUMNS:
        np.testing.assert_array_equal(getattr(out.rows, c), cols[c])
    # the words are exactly the hand-packed ones
    expected = [hand_pack(*(int(cols[c][i]) for c in COLUMNS)) for i in range(len(rows))]
    assert pack_words(rows).tolist() == expected


@FAST
@given(
    hits=st.lists(valid_hit_values(), max_size=10),
    anc=st.lists(
        st.tuples(st.sampled_from([0, 1, 3, 4, 5]), ints(0, 1), ints(0, 200), ints(0, 2**33), ints(0, 20000),
                  ints(-(10**8), 10**8).map(lambda k: k / 1e6)),
        min_size=1, max_size=10,
    ),
    data=st.data(),
)
def test_ancillary_float_tdc_passes_through_csv(hits, anc, data):
    allrows = data.draw(st.permutations(hits + anc))
    cols = {c: np.array([r[j] for r in allrows], float if c == "tdc" else np.int64) for j, c in enumerate(COLUMNS)}
    out = decode(encode_csv(Rows.from_columns(**cols)), "csv")
    assert out.rejects == []
    got = out.rows
    for c in COLUMNS:
        np.testing.assert_array_equal(np.asarray(getattr(got, c), float), cols[c].astype(float))
    if any(v != round(v) for v in cols["tdc"]):
        assert got.tdc.dtype.kind == "f"
    cleaned, n_anc = clean(got)
    assert n_anc == len(anc)
    assert sorted(map(tuple, cleaned.to_pandas().values.tolist())) == sorted(map(tuple, hits))


# --- the 64-bit word layout -----------------------------------------------------------------


def test_daq64_layout_against_hand_packed_word():
    # head=2 (bits 61-63), fpga=1 (58-60), channel=128 (49-57), orbit=3387200973 (17-48), bx=3563 (5-16), tdc=29 (0-4)
    word = (2 << 61) | (1 << 58) | (128 << 49) | (3387200973 << 17) | (3563 << 5) | 29
    out = decode([struct.pack("<Q", word)], "daq64")
    r = out.rows
    assert out.rejects == []
    assert (r.head[0], r.fpga[0], r.channel[0], r.orbit[0], r.bx[0], r.tdc[0]) == (2, 1, 128, 3387200973, 3563, 29)
    assert r.orbit.dtype == np.int64
    assert struct.pack("<Q", word)[0] == word & 0xFF  # little endian on the wire


@pytest.mark.parametrize("name", list(BITS))
def test_each_daq64_field_sits_in_its_own_bits(name):
    first, n = BITS[name]
    word = np.array([((1 << n) - 1) << first], np.uint64)  # all bits of one field set, the rest zero
    cols = unpack_words(word)
    for col in COLUMNS:
        assert int(cols[col][0]) == ((1 << n) - 1 if col == name else 0), col
    assert det.WORD_LAYOUT[{"head": "HEAD", "fpga": "FPGA", "channel": "TDC_CHANNEL", "orbit": "ORBIT_CNT",
                            "bx": "BX_COUNTER", "tdc": "TDC_MEAS"}[name]] == (first, n)


def test_orbit_above_2_31_stays_exact_int64():
    orbits = [2**31 + 1, 3387315431, 2**32 - 1]
    csv_rows = [f"2,0,5,{o},7,3".encode() for o in orbits]
    words = b"".join(struct.pack("<Q", hand_pack(2, 0, 5, o, 7, 3)) for o in orbits)
    for payloads, fmt in ((csv_rows, "csv"), ([b"\n".join(csv_rows)], "csv-batch"), ([words], "daq64")):
        out = decode(payloads, fmt)
        assert out.rows.orbit.dtype == np.int64
        assert out.rows.orbit.tolist() == orbits
    # with an ancillary float row in the batch the hits keep exact orbits after clean()
    out = decode([*csv_rows, b"4,1,0,3387315431,0,-0.573730"], "csv")
    hits, n_anc = clean(out.rows)
    assert n_anc == 1
    assert hits.orbit.dtype == np.int64
    assert hits.orbit.tolist() == orbits


# --- real files -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_df():
    if not SAMPLE_CSV.exists():
        pytest.skip("shared data not available")
    return pd.read_csv(SAMPLE_CSV)


def test_stream_sample_decodes_without_rejects(sample_df):
    raw = SAMPLE_CSV.read_bytes()
    out = decode([raw], "csv-batch")
    assert out.rejects == []
    assert len(out.rows) == len(sample_df) == 74
    np.testing.assert_array_equal(out.rows.to_pandas().to_numpy(float), sample_df.to_numpy(float))
    # one row per message as well
    lines = raw.splitlines()[1:]
    out1 = decode(lines, "csv")
    assert out1.rejects == []
    assert len(out1.rows) == 74

    hits, n_anc = clean(out.rows)
    expected = sample_df[sample_df.HEAD == 2].reset_index(drop=True)
    assert len(hits) == len(expected)
    assert n_anc == int((sample_df.HEAD != 2).sum())
    got = hits.to_pandas()
    assert (got.dtypes == np.int64).all()
    pd.testing.assert_frame_equal(got, expected.astype(np.int64), check_dtype=False)
    assert got.ORBIT_CNT.min() > 2**31


def test_read_csv_matches_pandas_on_the_run_file():
    if not RUN_CSV.exists():
        pytest.skip("shared data not available")
    df = pd.read_csv(RUN_CSV)
    rows = read_csv(str(RUN_CSV))
    pd.testing.assert_frame_equal(rows.to_pandas(), df, check_dtype=False)
    assert rows.orbit.dtype == np.int64


def test_rows_past_the_line_counters_16_bits_are_rejected_as_oversized_and_lose_nothing():
    """Commas and stray bytes are counted in 16-bit slots of one sum: lines of >= 65,536 bytes overflow them,
    and are rejected as oversized before those counts are used; the rows around them decode."""
    commas, letters = b"," * 70_000, b"x" * 70_000
    out = decode([b"2,0,5,100,7,3\n" + commas + b"\n" + letters + b"\n2,1,6,101,8,4", b"2,0,7,102,9,5"], "csv-batch")
    assert sorted((r.offset, r.reason, len(r.payload)) for r in out.rejects) == [
        (0, "oversized", 70_000), (0, "oversized", 70_000)]
    assert out.rows.channel.tolist() == [5, 6, 7] and out.rows.offset.tolist() == [0, 0, 1]
