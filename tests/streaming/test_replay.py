"""``dtlive replay``: files cut in pieces, in one process and on Dask, give the same windows.

Tiers: the pieces and the window bookkeeping are pure (any cut covers every line once; the plan replayed on
summaries equals the dt_event_windows node); the Dask driver runs in-process against an inline client (a fake
of ``distributed.Client``), and on a real ``LocalCluster`` of 2 worker processes.
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path

import fsspec
import pytest
from datafiles import RUN_CSV
from pipeline_runs import expected_products

from dtlive.config import load_config
from dtlive.core.decode import encode_csv
from dtlive.core.rows import Rows
from dtlive.core.simulate import simulate
from dtlive.streaming.replay import plan_pieces, read_piece, replay, split_payloads

PER_CHAMBER = [24_253, 35_907, 60_564, 36_572]
CFG = load_config({}, env={})


class InlineClient:
    """The part of ``distributed.Client`` the replay driver uses, running every task at once in-process."""

    def __init__(self):
        self.tasks = 0

    def nthreads(self) -> dict:
        return {"inline": 2}

    def submit(self, fn, *args, pure=True, **kwargs) -> Future:
        args = [a.result() if isinstance(a, Future) else a for a in args]
        self.tasks += 1
        f = Future()
        f.set_result(fn(*args, **kwargs))
        return f

    def gather(self, futures):
        return [f.result() for f in futures]


def comparable(msg: dict) -> dict:
    """Everything of a message but what differs by run (ids, host, times of processing)."""
    prov = {k: v for k, v in msg["provenance"].items() if k in ("inputs", "input_position", "restart_offsets")}
    return {**{k: v for k, v in msg.items() if k != "provenance"}, "provenance": prov}


def drift_entries(msgs: list[dict]) -> int:
    """Chamber hits paired with a scintillator hit, over all windows."""
    return sum(sum(h["bin_counts"]) + h["underflow"] + h["overflow"]
               for m in msgs for h in m["histograms"]["drift_time_ns"].values())


def write_csv(path, rows: Rows) -> str:
    path.write_bytes(b"HEAD,FPGA,TDC_CHANNEL,ORBIT_CNT,BX_COUNTER,TDC_MEAS\n" + b"\n".join(encode_csv(rows)) + b"\n")
    return str(path)


def muons(tmp_path) -> str:
    """8 s of simulated detector rows: muons with the scintillator (drift times), ancillary rows, noise."""
    return write_csv(tmp_path / "muons.csv", simulate(8.0, seed=5))


def both(paths, piece_bytes, client, store_dir, **kw):
    """The one-process replay and the one on ``client``, same pieces."""
    from dtlive.storage.history import HistoryStore

    out = []
    for name, c in (("local", None), ("dask", client)):
        s = replay(paths, CFG, client=c, store=HistoryStore(store_dir / name), piece_bytes=piece_bytes,
                   orbit_epoch=1.7e9, **kw)
        out.append(s)
    return out


# ------------------------------------------------------------------ pieces


@pytest.mark.parametrize("piece_bytes", [1, 7, 26, 100, 4096])
def test_pieces_cover_every_line_once(tmp_path, piece_bytes):
    lines = [b"HEAD,FPGA", b"2,0,1,5,6,7", b"", b"x" * 300, b"2,1,2,3,4,5\r", b"9"]
    data = b"\n".join(lines)  # no newline at the end, a CRLF, an empty line, a line longer than a piece
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    pieces = plan_pieces([str(path)], piece_bytes)
    assert [p.index for p in pieces] == list(range(len(pieces)))
    assert pieces[-1].end == len(data) and all(p.end - p.start <= piece_bytes for p in pieces)
    assert b"".join(read_piece(p) for p in pieces) == data.replace(b"\r\n", b"\n")


def test_pieces_of_urls_and_missing_files(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/replay/a.csv", b"1\n22\n333\n")
    pieces = plan_pieces(["memory://replay/a.csv", f"file://{RUN_CSV}"], piece_bytes=4)
    assert [read_piece(p) for p in pieces[:3]] == [b"1\n22\n", b"333\n", b""]
    assert pieces[3].path.startswith("file://") and read_piece(pieces[3]).startswith(b"HEAD,")
    with pytest.raises(FileNotFoundError):
        plan_pieces([str(tmp_path / "nope.csv")])


def test_payloads_are_cut_after_newlines():
    data = b"".join(b"%d\n" % i for i in range(1000))
    parts = split_payloads(data, 64)
    assert b"".join(parts) == data and all(p.endswith(b"\n") for p in parts)
    assert max(map(len, parts)) <= 64
    assert split_payloads(b"x" * 100 + b"\nab", 10) == [b"x" * 100 + b"\n", b"ab"]  # a long line stays whole


# ------------------------------------------------------------------ the Dask driver, inline


@pytest.mark.parametrize("piece_bytes", [50_000, 300_000, 20 << 20])
def test_inline_dask_replay_equals_one_process(tmp_path, piece_bytes):
    client = InlineClient()
    local, dask = both([str(RUN_CSV)], piece_bytes, client, tmp_path)
    assert local["hits"] == dask["hits"] == 159_616
    assert [comparable(m) for m in dask["messages"]] == [comparable(m) for m in local["messages"]]
    assert client.tasks >= 2 * local["pieces"]


def test_inline_dask_replay_with_scintillator_ancillary_and_late_rows(tmp_path):
    """Drift times need the merged scintillator table of windows cut by pieces; a second copy is all late."""
    sim = muons(tmp_path)
    local, dask = both([sim, sim], 40_000, InlineClient(), tmp_path)
    msgs = local["messages"]
    assert local["pieces"] > 10
    assert drift_entries(msgs) > 1000  # the scintillator pairs were found
    assert sum(m["counts"]["late_hits"] for m in msgs) > 0 and sum(m["counts"]["ancillary"] for m in msgs) > 0
    assert [comparable(m) for m in dask["messages"]] == [comparable(m) for m in msgs]
    assert sum(m["counts"]["rows"] for m in msgs) == 2 * (len(Path(sim).read_bytes().splitlines()) - 1)


def test_inline_dask_replay_counts_bad_rows_and_goes_on(tmp_path):
    good = RUN_CSV.read_bytes().splitlines()
    bad = good[:1000] + [b"2,0,1,not-a-number,5,6", b"2,0,1", b"\xff\xfe"] + good[1000:2000]
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\n".join(bad) + b"\n")
    local, dask = both([str(path)], 5_000, InlineClient(), tmp_path)
    rejected = sum(sum(m["counts"]["rejected"].values()) for m in local["messages"])
    assert rejected == 3 and local["hits"] == 1999
    assert [comparable(m) for m in dask["messages"]] == [comparable(m) for m in local["messages"]]


# ------------------------------------------------------------------ a real LocalCluster


@pytest.fixture(scope="module")
def client():
    from dtlive.streaming.dask_driver import dask_client

    with dask_client("local:2") as c:
        yield c


@pytest.mark.slow
def test_replay_on_a_local_cluster_equals_one_process(tmp_path, client):
    from dtlive.storage.history import HistoryStore
    from dtlive.storage.ledger import Ledger

    sim = muons(tmp_path)
    local, dask = both([str(RUN_CSV), sim], 300_000, client, tmp_path)
    assert local["pieces"] >= 16 and local["windows"] == dask["windows"] > 20
    assert [comparable(m) for m in dask["messages"]] == [comparable(m) for m in local["messages"]]
    assert drift_entries(dask["messages"]) > 1000

    ledger = Ledger()
    exp = expected_products(RUN_CSV)
    store = HistoryStore(tmp_path / "history")
    summary = replay([str(RUN_CSV)], CFG, client=client, ledger=ledger, store=store, piece_bytes=1 << 20)
    assert summary["hits"] == exp["total"] == 159_616
    ds = store.load()
    assert int(ds.total_hits.sum()) == 159_616 and int(ds.rows.sum()) == exp["rows"]
    assert ds.hits_per_chamber.sum("time").values.tolist() == PER_CHAMBER
    run = next(r for r in ledger.runs() if r["run_id"] == summary["run_id"])
    assert run["kind"] == "replay" and run["status"] == "finished" and run["config_hash"] == CFG.config_hash
    assert run["inputs"] == [{"file": str(RUN_CSV)}]


def test_replay_command(tmp_path, monkeypatch, capsys):
    from dtlive.deploy.cli import main

    monkeypatch.setenv("DTLIVE_HISTORY", str(tmp_path / "history"))
    assert main(["replay", str(RUN_CSV), "--window", "5s", "--piece-mb", "1", "--no-ledger"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    pieces = -(-RUN_CSV.stat().st_size // 2**20)
    assert summary["hits"] == 159_616 and summary["windows"] >= 7 and summary["pieces"] == pieces == 4
    assert f"replay: {pieces}/{pieces} pieces" in out.err


@pytest.mark.parametrize("size", ["0", "-1", "big"])
def test_replay_command_rejects_a_bad_piece_size(tmp_path, monkeypatch, capsys, size):
    from dtlive.deploy.cli import main

    monkeypatch.setenv("DTLIVE_HISTORY", str(tmp_path / "history"))
    with pytest.raises(SystemExit):
        main(["replay", str(RUN_CSV), "--piece-mb", size, "--no-ledger"])
    assert "--piece-mb" in capsys.readouterr().err


def test_replay_command_names_a_missing_file_and_records_nothing(tmp_path, monkeypatch, capsys):
    from dtlive.deploy.cli import main

    monkeypatch.setenv("DTLIVE_HISTORY", str(tmp_path / "history"))
    assert main(["replay", str(RUN_CSV), str(tmp_path / "nope.csv"), "--no-ledger"]) == 1
    err = capsys.readouterr().err
    assert "nope.csv" in err and "Traceback" not in err
    assert not (tmp_path / "history").exists() or not any((tmp_path / "history").iterdir())
