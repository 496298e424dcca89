"""Canned alert analyses (dtlive.alerts.analyses): rate_excess on synthetic history with an injected excess and
a bad period, snapshot NetCDF round trip with provenance, the papermill notebook, the registry, the decorator
and entry-point discovery (built-ins through the installed entry points, broken plug-ins reported)."""

from __future__ import annotations

import importlib.metadata
import json
import math

import nbformat
import numpy as np
import pytest
import xarray as xr
from alert_history import BAD, N_WIN, RATES, T0, TRIGGER, W, alert, window_message

from dtlive.alerts import analyses as an
from dtlive.alerts.analyses import AnalysisContext, AnalysisResult
from dtlive.core.messages import iso_utc
from dtlive.storage.history import HistoryStore
from dtlive.storage.ledger import Ledger


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A history store and a ledger holding the same N_WIN windows, and a ledger with the bad period."""
    d = tmp_path_factory.mktemp("analyses")
    msgs = [window_message(w) for w in range(N_WIN)]
    history = HistoryStore(d / "history")
    for i in range(0, N_WIN, 60):
        history.append(msgs[i : i + 60])
    ledger = Ledger(f"sqlite:///{d / 'ledger.sqlite'}")
    ledger.record_windows((m, "dt.monitor", 0, i) for i, m in enumerate(msgs))
    ledger.add_period(*BAD, "noisy chamber 0", automatic=False, who="shifter")
    yield {"history": history, "ledger": ledger, "dir": d, "msgs": msgs}
    ledger.close()


def context(store, tmp_path, **params) -> AnalysisContext:
    return AnalysisContext(store["history"], store["ledger"], tmp_path / "artifacts", params)


# ---------------------------------------------------------------------------------------------- rate_excess


def test_rate_excess_finds_the_injected_excess(store, tmp_path):
    r = an.get_analysis("rate_excess")(alert(), context(store, tmp_path))
    assert (r.name, r.version, r.status) == ("rate_excess", "1", "ok")
    sig = r.data.significance_sigma
    assert float(sig.sel(chamber=2)) > 5, r.summary
    assert all(abs(float(sig.sel(chamber=c))) < 3 for c in (0, 1, 3)), r.summary
    assert r.summary["max_chamber"] == 2 and r.summary["max_significance_sigma"] == pytest.approx(float(sig[2]))
    assert float(r.data.p_value.sel(chamber=2)) < 1e-6 and float(r.data.p_value_sigma.sel(chamber=2)) > 5
    assert set(r.data.data_vars) >= {"on_counts", "background_rate_hz", "expected", "excess", "significance_sigma",
                                     "p_value", "total_significance_sigma", "rate_hz"}
    # exposures: 11 on windows (those overlapping [T-10, T+10)), background windows 1..299 minus the bad 100..129
    assert r.summary["on"]["windows"] == 11 and r.summary["on"]["exposure_s"] == pytest.approx(22.0)
    assert r.summary["background"]["windows"] == 299 - 30 and r.summary["background"]["bad_windows"] == 30
    assert r.summary["complete"] is True
    on_counts = np.sum([store["msgs"][w]["hits_per_chamber"] for w in range(315, 326)], axis=0)
    assert r.data.on_counts.values.tolist() == on_counts.tolist()
    assert int(r.data.total_on_counts) == on_counts.sum()
    json.dumps(r.summary, allow_nan=False)
    json.dumps(r.to_dict(), allow_nan=False)
    prov = r.provenance
    assert prov["analysis"] == "rate_excess" and prov["params"]["background_s"] == 600.0
    assert prov["alert"]["id"] == "IceCube:42" and prov["code"]["dtlive_version"]
    assert prov["windows"]["on"]["window_ids"] == list(range(315, 326))
    assert prov["windows"]["background"]["excluded_bad"] == list(range(100, 130))
    assert prov["inputs"]["on"]["inputs"] == [{"topic": "dt.hits", "partition": 0, "ranges": [[315_000, 325_999]],
                                               "messages": 11_000}]
    assert prov["inputs"]["background"]["windows"] == 299  # the span used, bad windows inside it included
    assert prov["bad_intervals"] == [[iso_utc(BAD[0]), iso_utc(BAD[1])]]


def test_excluding_the_bad_period_changes_the_background(store, tmp_path):
    good = an.get_analysis("rate_excess")(alert(), context(store, tmp_path))
    raw = an.get_analysis("rate_excess")(alert(), context(store, tmp_path, exclude_bad=False))
    bg_good, bg_raw = (float(r.data.background_rate_hz.sel(chamber=0)) for r in (good, raw))
    assert bg_good == pytest.approx(RATES[0] / W, rel=0.05)
    assert bg_raw > bg_good * 1.2  # the noisy minute inflates the background ...
    assert float(raw.data.significance_sigma.sel(chamber=0)) < -3  # ... and fakes a deficit
    assert abs(float(good.data.significance_sigma.sel(chamber=0))) < 3
    assert raw.summary["background"]["exposure_s"] - good.summary["background"]["exposure_s"] == pytest.approx(60.0)
    assert raw.data.background_rate_hz.sel(chamber=1) == pytest.approx(float(good.data.background_rate_hz[1]), rel=0.1)
    # without a ledger there is nothing to exclude: same as exclude_bad=False
    nolog = AnalysisContext(store["history"], None, tmp_path / "a")
    assert an.get_analysis("rate_excess")(alert(), nolog).data.on_counts.values.tolist() == \
        raw.data.on_counts.values.tolist()
    assert float(an.get_analysis("rate_excess")(alert(), nolog).data.background_rate_hz[0]) == pytest.approx(bg_raw)


def test_rate_excess_without_data(store, tmp_path):
    ra = an.get_analysis("rate_excess")
    far = ra(alert(T0 + 1e6), context(store, tmp_path))
    assert far.status == "no_data" and "no windows" in far.summary["reason"]
    assert far.provenance["time_ranges"]["on"][0] == iso_utc(T0 + 1e6 - 10)
    none = ra(alert(None), context(store, tmp_path))
    assert none.status == "no_data" and "trigger time" in none.summary["reason"]
    in_bad = ra(alert(T0 + 230.0), context(store, tmp_path, on_before_s=5, on_after_s=5, background_s=100, gap_s=0))
    assert in_bad.status == "no_data" and "bad periods" in in_bad.summary["reason"]
    no_bg = ra(alert(T0 + 20.0), context(store, tmp_path))  # background would be before the first window
    assert no_bg.status == "no_data" and "background" in no_bg.summary["reason"]
    empty = ra(alert(), AnalysisContext(HistoryStore(tmp_path / "empty"), store["ledger"], tmp_path / "a"))
    assert empty.status == "no_data"
    # not all recorded yet: the windows after the last one are missing -> computed, flagged incomplete
    late = ra(alert(T0 + W * N_WIN - 4), context(store, tmp_path))
    assert late.status == "ok" and late.summary["complete"] is False and late.summary["on"]["windows"] == 7
    for r in (far, none, in_bad, no_bg, empty):
        json.dumps(r.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="no parameter 'on_s'"):
        ra(alert(), context(store, tmp_path, on_s=3))


def test_poisson_and_li_ma():
    for k, mu in [(1, 0.5), (3, 1.0), (10, 4.2), (40, 25.0), (30, 60.0)]:
        exact = 1.0 - sum(math.exp(-mu + i * math.log(mu) - math.lgamma(i + 1)) for i in range(k))
        assert an.poisson_sf(k, mu) == pytest.approx(exact, rel=1e-9, abs=1e-15)
    # far tails stay finite and ordered (no underflow to 0 -> inf sigma)
    s1, s2 = an.sigma_from_log_p(an.poisson_log_sf(1000, 300.0)), an.sigma_from_log_p(an.poisson_log_sf(3000, 300.0))
    assert 25 < s1 < s2 < 200
    assert an.sigma_from_log_p(math.log(1.3498980e-3)) == pytest.approx(3.0, abs=1e-6)
    assert an.poisson_sf(0, 3.0) == 1.0 and an.poisson_sf(5, 0.0) == 0.0
    assert an.li_ma_significance(0, 0, 0.1) == 0.0 and an.li_ma_significance(50, 100, 1.0) < -3
    big = an.li_ma_significance(np.array([20000, 21000]), np.array([600000, 600000]), 1 / 30)
    assert abs(big[0]) < 0.01 and big[1] > 5
    from scipy.special import logsumexp
    from scipy.stats import norm, poisson

    # the tail summed term by term in logs: independent of the incomplete gamma / Kummer forms used by dtlive
    for k, mu in [(40, 25.0), (900, 700.0), (20000, 19000.0), (1000, 300.0), (3000, 300.0), (5000, 10.0)]:
        tail = float(logsumexp(poisson.logpmf(np.arange(k, k + 20 * int(math.sqrt(mu)) + 2000), mu)))
        assert an.poisson_log_sf(k, mu) == pytest.approx(tail, rel=1e-9)

    # Li & Ma eq. 17 is the likelihood-ratio test of "one common background" against "free on and off rates"
    for n_on, n_off, alpha in [(130, 1000, 0.1), (7, 40, 0.25), (20000, 600000, 1 / 30), (3, 90, 1 / 30)]:
        b = (n_on + n_off) / (1 + alpha)
        log_ratio = (poisson.logpmf(n_on, n_on) + poisson.logpmf(n_off, n_off)
                     - poisson.logpmf(n_on, alpha * b) - poisson.logpmf(n_off, b))
        expected = math.copysign(math.sqrt(max(2 * log_ratio, 0.0)), n_on - alpha * n_off)
        assert float(an.li_ma_significance(n_on, n_off, alpha)) == pytest.approx(expected, rel=1e-7, abs=1e-9)
    for p in (0.3, 1.3498980e-3, 2.87e-7, 1e-30):
        assert an.sigma_from_log_p(math.log(p)) == pytest.approx(float(norm.isf(p)), rel=1e-6)


# ---------------------------------------------------------------------------------------------- snapshot


def test_snapshot_round_trips_with_provenance(store, tmp_path):
    r = an.get_analysis("snapshot")(alert(), context(store, tmp_path, before_s=30, after_s=30))
    assert r.status == "ok" and len(r.artifacts) == 1
    path = r.artifacts[0]
    assert path.parent == tmp_path / "artifacts" and path.name == "IceCube_42-r1-snapshot.nc"
    with xr.open_dataset(path, engine="h5netcdf") as f:
        back = f.load()
    expected = store["history"].load(TRIGGER - 31, TRIGGER + 30)  # windows overlapping [T-30, T+30): 305..335
    assert back.window_id.values.tolist() == list(range(305, 336)) == expected.window_id.values.tolist()
    for name in ("hits_per_chamber", "channel_occupancy", "drift_time_ns", "total_hits"):
        np.testing.assert_array_equal(back[name].values, expected[name].values)
    np.testing.assert_array_equal(back.time.values, expected.time.values)
    assert back.bad.dtype == bool and not back.bad.any()
    prov = json.loads(back.attrs["provenance"])
    assert prov["analysis"] == "snapshot" and prov["params"] == {"before_s": 30, "after_s": 30, "exclude_bad": False}
    assert prov["windows"]["window_ids"] == list(range(305, 336)) and prov["alert"]["id"] == "IceCube:42"
    assert prov["inputs"]["inputs"][0]["ranges"] == [[305_000, 335_999]]
    assert json.loads(back.attrs["alert"])["trigger_time"] == pytest.approx(TRIGGER)
    assert r.summary["total_hits"] == int(expected.total_hits.sum())
    assert r.provenance["windows"] == prov["windows"]
    # a snapshot over the bad period keeps the windows, flagged; exclude_bad drops them
    over_bad = an.get_analysis("snapshot")(alert(T0 + 230.0), context(store, tmp_path, before_s=40, after_s=40))
    assert over_bad.summary["bad_windows"] == 30 and over_bad.data.bad.sum() == 30
    dropped = an.get_analysis("snapshot")(alert(T0 + 230.0),
                                          context(store, tmp_path, before_s=40, after_s=40, exclude_bad=True))
    assert dropped.summary["windows"] == over_bad.summary["windows"] - 30
    nothing = an.get_analysis("snapshot")(alert(T0 - 1e5), context(store, tmp_path))
    assert nothing.status == "no_data" and nothing.artifacts == []


# ---------------------------------------------------------------------------------------------- notebook


@pytest.mark.slow
def test_notebook_runs_with_the_alert_injected(store, tmp_path):
    r = an.get_analysis("notebook")(alert(), context(store, tmp_path, before_s=60, after_s=20, timeout_s=120))
    assert r.status == "ok", r.summary
    out = tmp_path / "artifacts" / "IceCube_42-r1-notebook-alert_template.ipynb"
    assert r.artifacts[0] == out and out.exists()
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "IceCube:42" in injected[0].source and str(TRIGGER) in injected[0].source
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "alert IceCube:42 (record 1, IceCube)" in printed and "chamber" in printed
    assert r.summary["notebook_summary"]["windows"] == 41  # windows overlapping [T-60, T+20)
    rates = r.summary["notebook_summary"]["rates"]
    assert rates["2"]["on_hz"] > rates["2"]["before_hz"] + 5  # the injected excess shows (+11 Hz)
    assert all(abs(rates[c]["on_hz"] - rates[c]["before_hz"]) < 5 for c in "013")
    assert r.data.rate_hz.sizes == {"time": 41, "chamber": 4}
    assert r.provenance["notebook"].endswith("alert_template.ipynb")
    # a notebook that fails gives status error and keeps the executed notebook
    bad = tmp_path / "bad.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("alert_id = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("raise RuntimeError(f'cannot analyse {alert_id}')")]), bad)
    failed = an.get_analysis("notebook")(alert(), context(store, tmp_path, notebook=str(bad), timeout_s=60))
    assert failed.status == "error" and "cannot analyse IceCube:42" in failed.summary["reason"]
    assert failed.artifacts and failed.artifacts[0].exists()
    # a cell running past timeout_s: status error, the partly executed notebook kept
    slow = tmp_path / "slow.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(30)")]), slow)
    timed_out = an.get_analysis("notebook")(alert(), context(store, tmp_path, notebook=str(slow), timeout_s=1))
    assert timed_out.status == "error" and "timeout" in timed_out.summary["reason"]
    assert timed_out.summary["duration_s"] < 20 and timed_out.artifacts[0].name.endswith("notebook-slow.ipynb")


# ---------------------------------------------------------------------------------------------- registry


@pytest.fixture
def registry():
    """Restore the registry after a test that changes it."""
    saved, broken = dict(an._REGISTRY), dict(an._BROKEN)
    yield an
    an._REGISTRY.clear()
    an._REGISTRY.update(saved)
    an._BROKEN.clear()
    an._BROKEN.update(broken)


def test_builtins_come_through_the_installed_entry_points():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=an.GROUP)}
    assert {"rate_excess", "snapshot", "notebook"} <= set(eps)
    available = an.available_analyses()
    for name in ("rate_excess", "snapshot", "notebook"):
        assert eps[name].load() is available[name] is an.get_analysis(name)
        assert available[name].entry_point.startswith(f"dtlive.alerts.analyses:{name} (dtlive ")
        assert available[name].defaults is not None and available[name].description
    assert "rate_excess" not in an.broken_analyses()


def test_decorator_registry_and_run_analysis(registry, store, tmp_path):
    @an.analysis(name="t_count", version="2", defaults={"scale": 1})
    def t_count(alert, ctx):
        """Count the windows around the trigger."""
        ds = ctx.windows(alert.trigger_time - 10, alert.trigger_time + 10)
        return AnalysisResult(summary={"windows": ds.sizes["time"] * ctx.params["scale"]},
                              data=xr.Dataset({"n": ((), ds.sizes["time"])}), provenance={"mine": True})

    assert an.get_analysis("t_count") is t_count and t_count.description == "Count the windows around the trigger."
    ctx = context(store, tmp_path, scale=3)
    r = an.run_analysis("t_count", alert(), ctx)
    assert (r.name, r.version, r.summary) == ("t_count", "2", {"status": "ok", "windows": 33})
    assert r.provenance["mine"] is True and r.provenance["params"] == {"scale": 3} and "ran_at" in r.provenance
    history = store["ledger"].task_history("analysis/t_count/IceCube:42/1")
    assert [h["state"] for h in history] == ["running", "done"] and history[0]["task_kind"] == "analysis"
    assert history[-1]["detail"]["status"] == "ok"

    with pytest.raises(ValueError, match="already registered"):
        @an.analysis(name="t_count")
        def other(alert, ctx):
            return AnalysisResult()

    @an.analysis(name="t_wrong")
    def t_wrong(alert, ctx):
        return {"not": "a result"}

    with pytest.raises(TypeError, match="not an AnalysisResult"):
        an.run_analysis("t_wrong", alert(record=7), ctx)
    assert [h["state"] for h in store["ledger"].task_history("analysis/t_wrong/IceCube:42/7")] == ["running", "failed"]
    with pytest.raises(KeyError, match="no analysis 'nope'"):
        an.get_analysis("nope")
    an.unregister_analysis("t_wrong")
    assert "t_wrong" not in an.available_analyses()


def test_plugins_are_discovered_and_broken_ones_reported(registry, monkeypatch, tmp_path, caplog):
    (tmp_path / "dtlive_test_plugin.py").write_text(
        "from dtlive.alerts.analyses import AnalysisResult\n\n"
        "def plain(alert, ctx):\n"
        "    return AnalysisResult(summary={'alert': alert.id, 'params': ctx.params})\n\n"
        "plain.version = '0.3'\n")
    (tmp_path / "dtlive_test_crash.py").write_text("raise RuntimeError('plug-in import crashed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    EP = importlib.metadata.EntryPoint
    fake = [EP("plain_plugin", "dtlive_test_plugin:plain", an.GROUP),
            EP("missing", "dtlive_no_such_module_xyz:thing", an.GROUP),
            EP("crashing", "dtlive_test_crash:x", an.GROUP),
            EP("not_callable", "math:pi", an.GROUP),
            EP("snapshot", "dtlive_test_plugin:plain", an.GROUP),  # takes a built-in's name: refused
            *importlib.metadata.entry_points(group=an.GROUP)]
    monkeypatch.setattr(an, "_entry_points", lambda group: fake if group == an.GROUP else [])
    broken = an.discover(reload=True)
    assert set(broken) == {"missing", "crashing", "not_callable", "snapshot"}
    assert "ModuleNotFoundError" in broken["missing"] and "plug-in import crashed" in broken["crashing"]
    assert "name taken" in broken["snapshot"] and "not an analysis" in broken["not_callable"]
    assert "analysis plug-in 'crashing' left out" in caplog.text
    plain = an.get_analysis("plain_plugin")
    assert plain.version == "0.3" and plain.entry_point == "dtlive_test_plugin:plain"
    r = plain(alert(), AnalysisContext(HistoryStore(tmp_path / "h"), None, tmp_path / "a", {"x": 1}))
    assert r.summary == {"status": "ok", "alert": "IceCube:42", "params": {"x": 1}} and r.name == "plain_plugin"
    assert isinstance(r.data, xr.Dataset)
    with pytest.raises(KeyError, match="broken.*ModuleNotFoundError"):
        an.get_analysis("missing")
    assert an.get_analysis("snapshot").source == "dtlive.alerts.analyses:snapshot"  # the built-in still works
    assert {"rate_excess", "notebook", "plain_plugin"} <= set(an.available_analyses())
