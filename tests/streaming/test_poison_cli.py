"""Client tools on files that are not what they should be: one clear ``error:`` line, a non-zero exit, no traceback.

Run as a user would: ``python -m dtlive`` in a subprocess, against the real embedded broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dtlive.kafka.emulator import DataFileError, read_data_file

pytestmark = pytest.mark.kafka


def dtlive(broker: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dtlive", "--bootstrap", broker, *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "CI": "true"})


def assert_one_error_line(out: subprocess.CompletedProcess, *words: str) -> str:
    assert out.returncode != 0, out
    assert "Traceback" not in out.stderr, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error:" in lines[0], out.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path):
    made = {
        "junk.bin": os.urandom(5000),
        "empty.csv": b"",
        "blank.csv": b"\n\n  \n",
        "columns.csv": b"time,value,unit\n1,2,3\n",
        "six-columns.csv": b"a,b,c,d,e,f\n1,2,3,4,5,6\n",
        "header-only.csv": b"HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS\n",
        "text.csv": b"hello world\nthis is not data\n",
        "broken.json": b'{"mission": "Swift", "id": ["1"',
        "unknown.json": json.dumps({"hello": "world"}).encode(),
        "junk.json": os.urandom(3000),
        "good.csv": b"HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS\n2,0,5,100,7,3\n2,1,70,101,0,0\n"
                    b"4,1,0,102,0,-0.5\n",
    }
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize(("name", "words"), [
    ("junk.bin", ["junk.bin", "no DAQ rows"]), ("empty.csv", ["empty.csv", "empty"]),
    ("blank.csv", ["blank.csv", "empty"]), ("columns.csv", ["columns.csv", "'time,value,unit'"]),
    ("six-columns.csv", ["'a,b,c,d,e,f'"]), ("header-only.csv", ["header-only.csv", "no DAQ rows"]),
    ("text.csv", ["text.csv", "no DAQ rows"]), ("missing.csv", ["no such file", "missing.csv"]),
    (".", ["is a directory"]),
])
def test_emulate_on_a_file_that_is_not_daq_data(broker, files, topics, name, words):
    out = dtlive(broker, "emulate", str(files / name), "--topic", topics["hits_topic"], "--rate", "max")
    assert_one_error_line(out, "dtlive emulate: error:", *words)


def test_emulate_still_sends_a_good_file(broker, files, topics):
    out = dtlive(broker, "emulate", str(files / "good.csv"), "--topic", topics["hits_topic"], "--rate", "max")
    assert out.returncode == 0 and "sent 3 rows" in out.stderr, out.stderr


def test_read_data_file_says_what_is_wrong(files):
    lines, rows = read_data_file(str(files / "good.csv"))
    assert len(lines) == len(rows) == 3
    with pytest.raises(DataFileError, match="none of its 2 lines decodes"):
        read_data_file(str(files / "text.csv"))


@pytest.mark.parametrize(("name", "reason"), [
    ("broken.json", "not_json"), ("unknown.json", "unknown_format"), ("junk.json", "not_utf8"),
    ("junk.bin", "not_utf8"), ("empty.csv", "empty"), ("text.csv", "unknown_format"),
])
def test_alerts_send_on_a_file_that_is_not_a_notice(broker, files, name, reason):
    out = dtlive(broker, "alerts", "send", str(files / name))
    assert_one_error_line(out, "dtlive alerts: error:", name, "is not a notice", reason)


@pytest.mark.parametrize("name", ["missing.json", "."])
def test_alerts_send_on_a_missing_file(broker, files, name):
    out = dtlive(broker, "alerts", "send", str(files / name))
    assert_one_error_line(out, "dtlive alerts: error:", "no notice file")


def test_alerts_send_still_sends_a_template(broker, topics):
    out = dtlive(broker, "alerts", "send", "superk-sn", "--topic", f"gcn.notices.{topics['group_id']}")
    assert out.returncode == 0 and "sent" in out.stderr, out.stderr
