"""The benchmarks' counting checks: the expected count comes from the input, a miscount fails the verdict.

Pure parts on real chunks (the run-591 file, the simulator) and a tiny throughput run of each benchmark
variant on its own embedded broker, so the counting is proven end to end on the real parts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datafiles import RUN_CSV

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package lives next to tests/

from benchmarks.checks import CountedInput, count_check, count_hits, verdict  # noqa: E402
from dtlive.core.simulate import simulate  # noqa: E402
from dtlive.kafka.emulator import Chunk, file_chunks  # noqa: E402

RUN_ROWS = 159_616


def sim_chunks(seconds: float, pieces: int) -> list[Chunk]:
    rows = simulate(seconds, seed=4)
    edges = np.linspace(0, len(rows), pieces + 1).astype(int)
    return [Chunk(rows.select(slice(a, b))) for a, b in zip(edges[:-1], edges[1:])]


def test_counted_input_counts_the_hits_it_hands_out_and_cuts_to_the_rows_asked():
    chunks = sim_chunks(2.0, 7)
    heads = np.concatenate([c.rows.head for c in chunks])
    assert 0 < count_hits(heads) < len(heads)  # simulated: ancillary rows too
    for limit in (None, 1, len(heads) // 3, len(heads) - 1, len(heads), len(heads) + 10):
        counted = CountedInput(iter(chunks), limit)
        out = list(counted)
        n = len(heads) if limit is None else min(limit, len(heads))
        assert sum(len(c.rows) for c in out) == counted.rows_seen == n
        assert counted.hits == count_hits(heads[:n])
        for k in (0, 1, n // 2, n - 1, n):
            assert counted.hits_in_first(k) == count_hits(heads[:k])
    with pytest.raises(ValueError, match="rows were handed out"):
        counted.hits_in_first(len(heads) + 1)


def test_counted_input_keeps_the_csv_lines_of_a_cut_file_chunk():
    counted = CountedInput(file_chunks([str(RUN_CSV)], chunk_rows=50_000), 60_001)
    out = list(counted)
    assert [len(c.rows) for c in out] == [50_000, 10_001]
    assert [len(c.raw_lines) for c in out] == [50_000, 10_001]
    assert counted.hits == 60_001  # every row of run 591 is a hit
    looped = CountedInput(file_chunks([str(RUN_CSV)], loop=True), RUN_ROWS + 5)
    assert sum(len(c.rows) for c in looped) == RUN_ROWS + 5 and looped.hits == RUN_ROWS + 5


def test_a_miscount_fails_the_target_whatever_the_figures():
    assert verdict(True, [count_check(10, 10), count_check(4, 4, "messages")]) == (True, "MET")
    assert verdict(False, [count_check(10, 10)]) == (False, "MISSED")
    assert verdict(True, [count_check(1000, 999)]) == (False, "not met: 1 hits missing")
    assert verdict(True, [count_check(1000, 1003)]) == (False, "not met: 3 hits extra")
    assert verdict(None, [count_check(7, 5, late=2)]) == (False, "not met: 2 hits missing (2 of them dead-lettered "
                                                                 "as late)")
    assert verdict(None, [count_check(7, 7)]) == (None, "no target; all counted")
    met, text = verdict(True, [count_check(5, 4, "rows on the topic"), count_check(9, 8, "hits")])
    assert not met and text == "not met: 1 rows on the topic missing; 1 hits missing"


def test_scaling_case_fails_when_any_run_miscounts_even_if_its_median_run_is_right():
    from benchmarks.scaling import median

    runs = [{"hits": 100, "seconds": 1.0}, {"hits": 99, "seconds": 0.5, "late_hits": 1}, {"hits": 100, "seconds": 2.0}]
    case = median(runs, expected_hits=100)
    assert case["hits"] == 100 and case["runs_miscounted"] == 1
    assert case["count"]["problem"] == "1 hits missing (1 of them dead-lettered as late)"
    assert median([dict(r, hits=100) for r in runs], 100)["count"]["ok"]


def test_emulator_rate_verdict_needs_every_row_on_the_topic():
    from benchmarks.emulator_rate import with_count

    assert with_count({"target_met": True, "rows_on_topic": 5000}, 5000)["verdict"] == "MET"
    short = with_count({"target_met": True, "rows_on_topic": 4990}, 5000)
    assert short["target_met"] is False and short["verdict"] == "not met: 10 rows on the topic missing"
    assert short["rate_met"] is True  # the rate figure is kept, it just does not make the verdict


def test_replay_files_hold_the_rows_asked_and_their_hits_are_counted_as_written(tmp_path):
    from benchmarks.replay import write_files

    paths, hits = write_files(tmp_path, 170_003, 3)  # more than one pass of the file, uneven split
    frames = [pd.read_csv(p) for p in paths]
    assert [len(f) for f in frames] == [56_668, 56_668, 56_667]
    df = pd.concat(frames)
    assert hits == int((df.HEAD == 2).sum()) == 170_003
    assert df.ORBIT_CNT.iloc[RUN_ROWS:].min() > df.ORBIT_CNT.iloc[:RUN_ROWS].max()  # the loop goes on in event time


def test_alerts_expected_background_is_the_windows_inside_the_span():
    from types import SimpleNamespace

    from benchmarks.alerts import WINDOW_S, expected_background

    samples = [{"hits_per_chamber": np.array([1, 2, 3, 4]) * (i + 1)} for i in range(3)]
    win = SimpleNamespace(end0=1_000.0, samples=samples, end=lambda k: 1_000.0 + k * WINDOW_S)  # as Windows.end
    # background [T - 640, T - 40): with T = 1_700.5 that is [1060.5, 1660.5): windows ending 1064 ... 1660
    got = expected_background(win, 1_700.5)
    ks = range(32, 331)  # window k ends at 1000 + 2 k
    assert got["windows"] == len(ks) == 299
    assert got["hits_per_chamber"] == np.sum([samples[k % 3]["hits_per_chamber"] for k in ks], axis=0).tolist()
    assert expected_background(win, 1_700.0)["windows"] == 300  # aligned: both edges on window boundaries


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("name,fmt,rows,per_message,source", [
    ("csv", "csv", 30_000, 1, "file"),
    ("daq64_dense", "daq64", 300_000, 10_000, "sim"),
])
def test_a_tiny_throughput_run_counts_every_hit_of_its_input(name, fmt, rows, per_message, source):
    from benchmarks.throughput import bench_format

    r = bench_format(name, fmt, rows, per_message, repeats=1, profile="never", source=source)
    assert r["rows"] == rows and r["prefill"]["hits"] == r["hits"]
    if source == "sim":
        assert 0.9 * rows < r["hits"] < rows  # counted from the input: the simulator's ancillary rows are no hits
    else:
        assert r["hits"] == rows
    proc = r["runs"][0]["processor"]
    assert proc["count"] == count_check(r["hits"], proc["hits_counted"]) and proc["count"]["ok"], proc["count"]
    assert r["runs"][0]["raw"]["count"]["ok"]
    assert r["all_hits_counted"] and not r["verdict"].startswith("not met"), r["verdict"]


def test_the_end_to_end_benchmark_reads_the_processors_last_line():
    from benchmarks.end_to_end import _PROCESSED
    from dtlive.deploy.cli import processed_line

    m = _PROCESSED.search(processed_line(2_000_000, 10, 3, input_s=4.25, first_input_s=0.97))
    assert m and (int(m.group(1)), float(m.group(2)), float(m.group(4))) == (2_000_000, 4.25, 0.97)
