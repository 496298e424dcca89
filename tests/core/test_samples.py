"""Run 591 for the notebooks: found through a path or the ``data_dir`` setting, else the simulator, said so."""

from __future__ import annotations

import numpy as np
from datafiles import RUN_CSV

from dtlive.config import load_config
from dtlive.core.rows import clean
from dtlive.core.samples import RUN591_FILE, load_run591
from dtlive.core.simulate import simulate


def test_the_setting_finds_the_real_run():
    cfg = load_config({}, env={"DTLIVE_DATA_DIR": str(RUN_CSV.parent)})
    sample = load_run591(None, data_dir=cfg.data_dir)
    assert not sample.simulated and sample.name == "run 591" and sample.path == RUN_CSV
    assert sample.note == f"reading run 591 from {RUN_CSV.resolve()}"
    hits, _ = clean(sample.rows)
    assert len(hits) == 159_616  # the published figure of the file


def test_a_path_given_wins_over_the_setting_and_may_name_the_file_or_its_folder(tmp_path):
    for given in (RUN_CSV, RUN_CSV.parent):
        sample = load_run591(given, data_dir=str(tmp_path))
        assert sample.path == RUN_CSV, given


def test_a_path_given_that_does_not_hold_the_file_is_said_not_silently_replaced(tmp_path):
    """A wrong path the user typed must not quietly fall through to the setting: the note names it."""
    sample = load_run591(tmp_path, data_dir=str(RUN_CSV.parent), fallback_s=0.5)
    assert sample.simulated and sample.path is None
    assert f"run 591 was not found ({tmp_path / RUN591_FILE})" in sample.note


def test_without_the_file_the_simulator_stands_in_and_the_note_says_how_to_get_the_real_run(tmp_path):
    sample = load_run591(None, data_dir=str(tmp_path), fallback_s=0.5, seed=3)
    assert sample.simulated and sample.name == "simulation (0.5 s, seed 3)"
    assert sample.note.startswith(f"NOTE: run 591 was not found ({tmp_path / RUN591_FILE}): showing simulation")
    assert "Set DTLIVE_DATA_DIR" in sample.note
    expected = simulate(0.5, seed=3)
    assert np.array_equal(sample.rows.orbit, expected.orbit) and np.array_equal(sample.rows.channel, expected.channel)
    nothing = load_run591(None, data_dir="", fallback_s=0.5)
    assert nothing.simulated and "not looked for" in nothing.note and "DTLIVE_DATA_DIR not set" in nothing.note


def test_the_setting_is_read_like_every_other():
    assert load_config({}, env={}).data_dir == ""
    assert load_config({"data_dir": "/cli"}, env={"DTLIVE_DATA_DIR": "/env"}).data_dir == "/cli"
