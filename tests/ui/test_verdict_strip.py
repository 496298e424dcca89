"""The dashboard's quality summary strip: the newest dtlive.quality/2 verdict per chamber, "no verdict yet"
before one came, and dtlive.quality/1 periods on the same topic still shaded (pure: no broker, no browser)."""

from __future__ import annotations

import json
import re

from dtlive.core.messages import QUALITY_SCHEMA, QUALITY_TESTS_SCHEMA
from dtlive.ui.live import LiveVerdicts
from dtlive.ui.widgets import Dashboard, parse_quality, verdict_html


def verdict(end: str, status_of: dict[int, int | None], reasons: dict[int, list[str]] | None = None,
            wide: list[str] | None = None) -> dict:
    reasons = reasons or {}
    known = [s for s in status_of.values() if s is not None]
    return {"schema": QUALITY_TESTS_SCHEMA, "status": max(known) if known else None, "processor": "p",
            "windows": {"count": 5, "ids": [10, 14], "start": "2026-12-05T10:00:00Z", "end": end},
            "reference": {"label": "clean"},
            "chambers": {f"chamber_{c}": {"status": s, "label": "x", "reasons": reasons.get(c, [])}
                         for c, s in status_of.items()},
            "detector": {"status": 0, "reasons": wide or [], "tests": []}}


def badges(html: str) -> dict[str, tuple[str, str, str]]:
    """chamber (or 'detector') -> (data-status, title, text) of each badge in the strip."""
    out = {}
    for attrs, text in re.findall(r"<span class='dtlive-(?:chamber|detector)-status'([^>]*)>([^<]*)</span>", html):
        chamber = re.search(r"data-chamber='(\d)'", attrs)
        out[chamber.group(1) if chamber else "detector"] = (re.search(r"data-status='(\w+)'", attrs).group(1),
                                                            re.search(r"title='([^']*)'", attrs).group(1), text)
    return out


def test_before_any_verdict_the_strip_says_so_and_never_ok():
    html = verdict_html(LiveVerdicts().summary())
    b = badges(html)
    assert set(b) == {"0", "1", "2", "3", "detector"}
    assert all(s == "none" and "no verdict yet" in t for s, _, t in b.values())
    assert "ok" not in " ".join(t for _, _, t in b.values()) and "data-state='waiting'" in html


def test_the_newest_verdict_sets_each_chamber_with_its_first_reason_as_title():
    live = LiveVerdicts()
    assert live.add([{"schema": QUALITY_SCHEMA, "start": "a", "end": "b"}]) is False  # periods are not verdicts
    assert live.add([verdict("2026-12-05T10:00:20Z", {0: 0, 1: 1, 2: 4, 3: None},
                             {1: ["dead_channels: 1 dead"], 2: ["dead_channels: 64 dead <all>", "rate 0 Hz"]})])
    assert not live.add([verdict("2026-12-05T10:00:10Z", {0: 4, 1: 4, 2: 4, 3: 4})])  # older, arriving late
    b = badges(verdict_html(live.summary()))
    assert b["0"] == ("0", "", "chamber 0: ok")
    assert b["1"] == ("1", "dead_channels: 1 dead", "chamber 1: minor")
    assert b["2"] == ("4", "dead_channels: 64 dead &lt;all&gt;", "chamber 2: bad")
    assert b["3"] == ("none", "", "chamber 3: not enough statistics")
    assert b["detector"][0] == "4" and b["detector"][2] == "detector: bad"
    assert b["detector"][1] == "dead_channels: 1 dead"  # no detector-wide reason: the first chamber's
    live.add([verdict("2026-12-05T10:00:30Z", {0: 0, 1: 0, 2: 0, 3: 0}, wide=["total_rate: ratio 0.7"])])
    b = badges(verdict_html(live.summary()))
    assert {c: s for c, (s, _, _) in b.items()} == {"0": "0", "1": "0", "2": "0", "3": "0", "detector": "0"}
    assert b["detector"][1] == "total_rate: ratio 0.7"


def test_the_dashboard_shows_verdicts_in_the_strip_and_shades_only_periods():
    dash = Dashboard(bootstrap="127.0.0.1:1", start=False)
    assert dash.children[0] is dash.verdict_strip and "no verdict yet" in dash.verdict_strip.value
    period = {"schema": QUALITY_SCHEMA, "start": "2026-12-05T10:00:00Z", "end": "2026-12-05T10:01:00Z",
              "reason": "data_gap", "kind": "bad"}
    v = verdict("2026-12-05T10:00:20Z", {0: 0, 1: 0, 2: 4, 3: 0}, {2: ["chamber_rate: ratio 0.00"]})
    msgs = [parse_quality(json.dumps(m).encode()) for m in (period, v)]
    dash.add_periods(msgs)
    assert dash.periods == [period]
    assert badges(dash.verdict_strip.value)["2"] == ("4", "chamber_rate: ratio 0.00", "chamber 2: bad")
    assert "windows 10-14 (to 10:00:20 UTC), reference &#x27;clean&#x27;" in dash.verdict_strip.value
