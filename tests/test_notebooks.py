"""Every notebook in notebooks/ runs top to bottom in a real kernel, against a real embedded broker.

Each notebook gets its own topics and state directory (so the stack its ``ensure_stack()`` starts is
its own and is stopped afterwards), and its printed figures are checked against independent numbers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from datafiles import RUN_CSV
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
# the notebooks that show run 591: without its file (on Binder) they show the simulator instead, and say so
WITH_DATA = [p for p in ALL if "load_run591(" in p.read_text()]

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reaps it if it is our child
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie that is not our child still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_stack(state_dir: Path, timeout: float = 10.0) -> dict[str, int]:
    """Stop what the notebook's ensure_stack() recorded in stack.json: emulator, processor, recorder first."""
    try:
        pids = json.loads((state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    order = sorted(pids, key=lambda n: {"emulator": 0, "alerts": 1, "processor": 2, "recorder": 3}.get(n, 4))
    for name in order:
        pid = pids[name]
        if not isinstance(pid, int) or not _alive(pid):
            continue
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    return pids


def outputs(nb) -> str:
    """All text a notebook printed or displayed as text/plain, in order."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)  # a print may arrive in several stream messages: no separator
            elif out.output_type in ("execute_result", "display_data"):
                parts.append("\n" + str(out.get("data", {}).get("text/plain", "")) + "\n")
        parts.append("\n")
    return "".join(parts)


def expected_run591() -> tuple[int, list[int]]:
    """Whole-file totals with pandas only."""
    df = pd.read_csv(RUN_CSV)
    hits = df[df.HEAD == 2]
    cham = hits[hits.TDC_CHANNEL < 128]
    chamber = 2 * cham.FPGA.astype(int) + cham.TDC_CHANNEL.astype(int) // 64
    return len(hits), [int((chamber == c).sum()) for c in range(4)]


@pytest.fixture(scope="module")
def notebook_broker(tmp_path_factory):
    """A broker of this module's own: the alerts notebook's listener reads the notice topics, which have fixed
    names (``gcn.notices.*``) other tests write to as well, from the beginning."""
    from conftest import free_port

    from dtlive.kafka.broker import EmbeddedBroker

    b = EmbeddedBroker(port=free_port(), state_dir=tmp_path_factory.mktemp("notebook-broker")).start()
    yield b.bootstrap
    b.stop()


@pytest.fixture
def notebook_env(notebook_broker, tmp_path, monkeypatch):
    """The kernel inherits this environment: the module's broker, own topics, own state directory."""
    broker = notebook_broker
    tag = uuid.uuid4().hex[:8]
    state = tmp_path / "state"
    state.mkdir()
    env = {"DTLIVE_BOOTSTRAP": broker, "DTLIVE_STATE_DIR": str(state),
           "DTLIVE_DATA_DIR": str(RUN_CSV.parent), "DTLIVE_HITS_TOPIC": f"nb-hits-{tag}",
           "DTLIVE_MONITOR_TOPIC": f"nb-monitor-{tag}", "DTLIVE_REJECTED_TOPIC": f"nb-rejected-{tag}",
           "DTLIVE_GROUP_ID": f"nb-proc-{tag}", "DTLIVE_QUALITY_TOPIC": f"nb-quality-{tag}",
           "DTLIVE_ANALYSES_TOPIC": f"nb-analyses-{tag}", "DTLIVE_ALERTS_GROUP_ID": f"nb-alerts-{tag}",
           "DTLIVE_ALERTS_REJECTED_TOPIC": f"nb-alerts-rejected-{tag}",
           "DTLIVE_ARTIFACTS": str(tmp_path / "artifacts"),
           "DTLIVE_DB": f"sqlite:///{tmp_path / 'ledger.sqlite'}", "DTLIVE_HISTORY": str(tmp_path / "history")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env
    stop_stack(state)


def check_quickstart(text: str, env: dict) -> None:
    assert f"Kafka at {env['DTLIVE_BOOTSTRAP']}" in text
    assert "started: ['alerts', 'emulator', 'processor', 'recorder']" in text  # own topics: nothing to reuse
    windows = re.search(r"windows so far: (\d+)", text)
    assert windows and int(windows.group(1)) > 0, text


def check_static_batch(text: str, env: dict) -> None:
    total, per_chamber = expected_run591()
    assert total == 159_616  # the published figure of the shared file
    assert f"total hits: {total:,}" in text
    assert "hits per chamber: " + " / ".join(f"{n:,}" for n in per_chamber) in text
    assert f"special-channel hits (ch >= 128): {total - sum(per_chamber):,}" in text
    assert "scintillator hits: 0 | drift-time entries: 0" in text


def check_own_graph(text: str, env: dict) -> None:
    assert f"Kafka at {env['DTLIVE_BOOTSTRAP']} | hits topic: {env['DTLIVE_HITS_TOPIC']}" in text
    windows = re.search(r"windows analysed: (\d+) \| messages read: ([\d,]+)", text)
    assert windows and int(windows.group(1)) == 3 and int(windows.group(2).replace(",", "")) > 0, text
    # the simulated DAQ has noisy channels (20-50x their normal rate): the finder must see some
    flagged = re.search(r"channels flagged in any window: \[([\d, ]*)\]", text)
    assert flagged and flagged.group(1).strip(), text


def check_data_vs_simulation(text: str, env: dict) -> None:
    total, per_chamber = expected_run591()
    assert f"run 591: {total:,} hits, per chamber {per_chamber}" in text
    sim = re.search(r"simulation \(30 s, seed 591\): ([\d,]+) hits", text)
    assert sim and 100_000 < int(sim.group(1).replace(",", "")) < 200_000, text
    assert "run 591: no drift times (no scintillator hits)" in text
    box = re.search(r"drift-time box from (-?\d+) ns to (\d+) ns", text)
    assert box and -20 <= int(box.group(1)) <= 30 and 350 <= int(box.group(2)) <= 400, text  # ~0..390 ns


def check_provenance(text: str, env: dict) -> None:
    import re as _re

    recorded = _re.search(r"windows recorded: (\d+)", text)
    assert recorded and int(recorded.group(1)) >= 3, text
    assert f"input {env['DTLIVE_HITS_TOPIC']} partition 0 offsets" in text
    assert _re.search(r"bad periods: 1 \| search 'HV' finds: \[\('period', '\d+'\)\]", text), text
    assert "configuration hashes: ['" in text
    got = _re.search(r"windows in history: (\d+) \| without bad periods: (\d+)", text)
    assert got and int(got.group(2)) == int(got.group(1)) - 1, text
    assert "task history: ['queued', 'running', 'succeeded']" in text
    blocks = _re.search(r"lumi blocks judged: (\d+) \| rule: good when status <= 2", text)
    assert blocks and int(blocks.group(1)) >= 1, text
    override = r"newest block of chamber 2: status \w+, automatic (good|BAD) -> now BAD \(by shifter\)"
    assert _re.search(override, text), text
    certified = _re.search(r"certified windows: (\d+) \| per chamber: \[(\d+), (\d+), (\d+), (\d+)\]", text)
    assert certified and int(certified.group(1)) >= 1, text


def check_alerts(text: str, env: dict) -> None:
    assert re.search(r"sent to gcn\.notices\.icecube\.lvk_nu_track_search \| alert IceCube:S[0-9a-f]{8}\n", text), text
    assert "analyses published: ['rate_excess', 'snapshot']" in text, text
    assert "rate excess status: ok" in text, text
    assert "inputs recorded in the provenance: True" in text
    assert "states: ['queued', 'running', 'succeeded', 'published']" in text, text


def check_reconstruction(text: str, env: dict) -> None:
    _, per_chamber = expected_run591()
    got = re.search(r"run 591: ([\d,]+) events, ([\d,]+) with a trigger word, ([\d,]+) background hits\n", text)
    assert got, text
    n_events, n_trigger, n_background = (int(g.replace(",", "")) for g in got.groups())
    assert 0 < n_trigger <= n_events and 0 < n_background < sum(per_chamber), got.group(0)
    split = re.search(r"run 591: event hits per chamber \[([\d, ]+)\], background hits per chamber \[([\d, ]+)\]", text)
    assert split, text
    in_events, background = ([int(v) for v in g.split(",")] for g in split.groups())
    assert [a + b for a, b in zip(in_events, background)] == per_chamber  # every chamber hit counted once
    assert sum(background) == n_background
    number = r"(-?[\d.]+|nan)"
    box = (rf"(run 591|simulation) \| (meantimer|trigger)\s+t0 \| chamber (\d): t0 = +{number} ± +{number} ns, "
           rf"Tmax = +{number} ± +{number} ns, v_drift = +{number} ± +{number} um/ns \(([\d,]+) hits\)")
    fits = {(s, k, int(c)): (*map(float, v), int(n.replace(",", ""))) for s, k, c, *v, n in re.findall(box, text)}
    assert len(fits) == 16, text  # both samples, both t0s, four chambers
    for (sample, kind, c), (t0, t0_err, tmax, tmax_err, v, v_err, n) in fits.items():
        where = f"{sample} {kind} chamber {c}"
        assert n > 500, f"{where}: time box with {n} hits"
        assert abs(t0) < 50 and 0 < t0_err < 15, f"{where}: t0 {t0} ± {t0_err} ns"
        assert 320 < tmax < 420 and 0 < tmax_err < 30, f"{where}: Tmax {tmax} ± {tmax_err} ns"
        assert 50 < v < 66 and 0 < v_err < 5, f"{where}: drift velocity {v} um/ns"
        if sample == "simulation" and kind == "meantimer":  # the simulator drifts at the nominal 53.8 um/ns
            assert abs(t0) < 5 and abs(tmax - 390.3) < 6, f"{where}: t0 {t0}, Tmax {tmax} ns"
    for sample in ("run 591", "simulation"):
        res = re.findall(rf"{sample} \| resolution \| chamber \d: layer 1 {number}, layer 2 {number}, "
                         rf"layer 3 {number}, layer 4 {number} mm", text)
        assert len(res) == 4 and all(0.05 <= float(r) <= 0.5 for row in res for r in row), (sample, res)
        eff = re.findall(rf"{sample} \| efficiency \| chamber \d: layer 1 {number} ± [\d.]+, layer 2 {number} ± "
                         rf"[\d.]+, layer 3 {number} ± [\d.]+, layer 4 {number} ± [\d.]+", text)
        assert len(eff) == 4, (sample, eff)
        for l1, l2, l3, l4 in eff:
            assert 0.5 < float(l1) <= 1 and 0.5 < float(l4) <= 1, (sample, eff)  # measured without bias
            assert float(l2) >= 0.95 and float(l3) >= 0.95, (sample, eff)  # ~1 by the meantimer's construction
    dead = re.search(r"dead cell \(chamber 2, layer 4, cell 8\): efficiency ([\d.]+) of (\d+) expected \| "
                     r"other cells of the layer ([\d.]+) \.\. ([\d.]+)", text)
    assert dead and float(dead.group(1)) < 0.3 and int(dead.group(2)) > 30 and float(dead.group(3)) > 0.8, text
    assert re.search(r"event display: 20 events of run 591 \(ids \d+ \.\. \d+\), [1-9]\d* segments", text), text


CHECKS = {
    "01-quickstart": check_quickstart,
    "02-static-batch": check_static_batch,
    "03-own-streamz-graph": check_own_graph,
    "04-data-vs-simulation": check_data_vs_simulation,
    "05-provenance": check_provenance,
    "06-alerts": check_alerts,
    "07-reconstruction": check_reconstruction,
}


def test_every_notebook_is_checked():
    assert ALL and {p.stem for p in ALL} == set(CHECKS)


def test_every_notebook_that_shows_run_591_finds_it_through_the_setting():
    """No notebook builds a path to the data of its own: they all go through ``load_run591`` and the
    ``data_dir`` setting, so each runs where the file is not (Binder)."""
    assert {p.stem for p in WITH_DATA} == {"02-static-batch", "04-data-vs-simulation", "07-reconstruction"}
    for p in ALL:
        text = p.read_text()
        assert "shared/data" not in text and "DATA_DIR = Path(" not in text, p.name
        if p not in WITH_DATA:
            assert "591_hits" not in text, f"{p.name} reads run 591 without load_run591"


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_runs(path, notebook_env):
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    started = time.monotonic()
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    elapsed = time.monotonic() - started
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    CHECKS[path.stem](outputs(nb), notebook_env)
    print(f"{path.name} ran in {elapsed:.0f} s")  # 06 waits for a minute of background before its trigger


def check_static_batch_simulated(text: str) -> None:
    total = int(re.search(r"total hits: ([\d,]+)", text).group(1).replace(",", ""))
    assert 100_000 < total < 250_000, text  # 30 s at the telescope's ~5 kHz
    scint = re.search(r"scintillator hits: ([\d,]+) \| drift-time entries: ([\d,]+)", text)
    assert scint and int(scint.group(1).replace(",", "")) > 0 and int(scint.group(2).replace(",", "")) > 0, text


def check_data_vs_simulation_simulated(text: str) -> None:
    got = dict(re.findall(r"(simulation \(30 s, seed (?:7|591)\)): ([\d,]+) hits, per chamber", text))
    assert len(got) == 2, text  # two different simulations, the stand-in (seed 7) and the reference (seed 591)
    assert got["simulation (30 s, seed 7)"] != got["simulation (30 s, seed 591)"], got
    assert "no drift times" not in text and text.count("drift-time box from") == 2, text


def check_reconstruction_simulated(text: str) -> None:
    got = re.search(r"simulation \(60 s, seed 7\): ([\d,]+) events, ([\d,]+) with a trigger word", text)
    assert got and int(got.group(1).replace(",", "")) > 1000, text
    assert re.search(r"event display: 20 events of simulation \(60 s, seed 7\)", text), text


CHECKS_SIMULATED = {
    "02-static-batch": check_static_batch_simulated,
    "04-data-vs-simulation": check_data_vs_simulation_simulated,
    "07-reconstruction": check_reconstruction_simulated,
}


@pytest.mark.parametrize("path", WITH_DATA, ids=[p.stem for p in WITH_DATA])
def test_notebook_runs_without_the_data(path, tmp_path, monkeypatch):
    """As on Binder: ``DTLIVE_DATA_DIR`` names a folder without run 591. The notebook must say so, show the
    simulator instead and run to the end."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("DTLIVE_DATA_DIR", str(empty))
    monkeypatch.setenv("DTLIVE_STATE_DIR", str(tmp_path / "state"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    text = outputs(nb)
    assert f"NOTE: run 591 was not found ({empty / 'run000591_hits.csv'}): showing simulation (" in text, text
    assert "Set DTLIVE_DATA_DIR to the folder holding run000591_hits.csv" in text
    CHECKS_SIMULATED[path.stem](text)
