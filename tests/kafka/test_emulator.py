"""The emulator's pacing, with a fake producer (the rate on a real broker is measured in benchmarks/)."""

from __future__ import annotations

import time

from dtlive.core.rows import Rows
from dtlive.kafka.emulator import Chunk, emulate


class RecordingProducer:
    def __init__(self):
        self.times: list[float] = []

    def produce(self, topic, payload, headers=None, **kwargs):
        self.times.append(time.perf_counter())

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=None):
        return 0


def slow_first_chunk(n: int, delay_s: float):
    time.sleep(delay_s)  # e.g. reading a file or warming up the simulator
    yield Chunk(Rows.from_columns(head=[2] * n, fpga=[0] * n, channel=[1] * n, orbit=list(range(n)), bx=[0] * n,
                                  tdc=[0] * n))


def test_a_slow_first_chunk_does_not_make_a_burst():
    producer = RecordingProducer()
    stats = emulate(producer, "t", slow_first_chunk(600, 0.4), rate=2000, fmt="csv", progress=False)
    first = producer.times[0]
    in_first_100ms = sum(t - first < 0.1 for t in producer.times)
    assert stats.rows == 600 and in_first_100ms <= 2000 * 0.1 * 1.2  # at most ~200 rows, not a catch-up burst
    assert 0.27 < producer.times[-1] - first < 0.35  # 600 rows at 2000 rows/s


def test_progress_of_a_file_shows_its_total_and_the_time_left_from_the_start(tmp_path, capsys):
    from dtlive.kafka.emulator import file_chunks

    path = tmp_path / "hits.csv"
    path.write_text("HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS\n"
                    + "".join(f"2,0,1,{100 + i},5,6\n" for i in range(300)))
    chunks = file_chunks([str(path)], chunk_rows=100)
    assert chunks.rows == 300
    stats = emulate(RecordingProducer(), "t", chunks, rate=None, progress=True, total=chunks.rows)
    assert stats.rows == 300
    bar = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
    assert bar and " 0%" in bar[0] and "/300 " in bar[0]  # drawn before anything is sent, with the total
    assert any("300/300" in line and "<" in line for line in bar)  # the end, with elapsed<remaining time
