"""The dashboard's text panels, as pure HTML makers and small widgets around them.

- :func:`verdict_html`: the summary strip on top, the detector's and each chamber's quality status side by side;
- :func:`status_html`: the status line (LIVE, BEHIND, NO NEW DATA, BROKER UNREACHABLE, PAUSED) and the newest
  window's figures;
- :class:`AlertPanel`: canned-analysis results of astrophysical alerts, newest first;
- :func:`health_html` / :class:`HealthPanel`: the services' heartbeats.

>>> from dtlive.ui.live import LiveVerdicts
>>> "waiting for the first quality verdict" in verdict_html(LiveVerdicts().summary())
True
"""

from __future__ import annotations

import html
import json
import time

import ipywidgets as W
import numpy as np

from dtlive.core.messages import ANALYSIS_SCHEMA, QUALITY_SCHEMA, QUALITY_TESTS_SCHEMA

STATUS_COLORS = ("#2e7d32", "#9e9d24", "#f9a825", "#ef6c00", "#c62828")  # status 0 (ok) .. 4 (bad)
UNJUDGED_COLOR = "#757575"
SIGNIFICANT_SIGMA = 3.0  # an analysis result at or above this is highlighted
_FONT = "font-family:sans-serif;font-size:13px"
_BADGE = "color:white;padding:2px 8px;border-radius:3px"


def parse_quality(value: bytes) -> dict:
    """A ``dtlive.quality/1`` period or ``dtlive.quality/2`` verdict as a dict (ValueError for anything else).

    >>> parse_quality(b'{"schema": "dtlive.quality/1", "start": "2024-01-01T00:00:00Z", "end": null}')["start"]
    '2024-01-01T00:00:00Z'
    """
    msg = json.loads(value)
    if not isinstance(msg, dict) or msg.get("schema") not in (QUALITY_SCHEMA, QUALITY_TESTS_SCHEMA):
        raise ValueError("not a dtlive.quality/1 or /2 message")
    return msg


def verdict_html(summary: dict) -> str:
    """The summary strip as HTML (pure): the detector's and each chamber's status from the newest verdict
    (:meth:`dtlive.ui.live.LiveVerdicts.summary`) as coloured cards side by side, each with its first reason.

    Each badge has ``data-status`` (0..4, or ``none`` when not judged) and a chamber badge ``data-chamber``;
    the reason is also the badge's title (tooltip).

    >>> from dtlive.ui.live import LiveVerdicts
    >>> "no verdict yet" in verdict_html(LiveVerdicts().summary())
    True
    """
    def card(css: str, text: str, status, reason: str, extra: str = "") -> str:
        color = UNJUDGED_COLOR if status is None else STATUS_COLORS[min(int(status), len(STATUS_COLORS) - 1)]
        shown = html.escape(reason) if reason else "&nbsp;"
        return (f"<div class='dtlive-card' style='flex:1 1 0;background:{color};border-radius:4px;"
                f"padding:4px 10px;min-width:0'>"
                f"<span class='{css}'{extra} data-status='{'none' if status is None else int(status)}' "
                f"title='{html.escape(reason, quote=True)}' style='color:white;font-size:15px;font-weight:bold'>"
                f"{html.escape(text)}</span>"
                f"<div class='dtlive-reason' style='color:white;font-size:12px;white-space:nowrap;overflow:hidden;"
                f"text-overflow:ellipsis'>{shown}</div></div>")

    d = summary["detector"]
    cards = [card("dtlive-detector-status", f"detector: {d['label']}", d["status"], d["reason"])]
    cards += [card("dtlive-chamber-status", f"chamber {c['chamber']}: {c['label']}", c["status"], c["reason"],
                   f" data-chamber='{c['chamber']}'") for c in summary["chambers"]]
    if summary["state"] == "waiting":
        info = "waiting for the first quality verdict"
    else:
        ids = summary["windows"]
        info = (f"window {ids[0]}" if ids[0] == ids[-1] else f"windows {ids[0]}-{ids[-1]}") if ids else "windows ?"
        if summary.get("end"):
            info += f" (to {str(summary['end'])[11:19]} UTC)"
        ref = summary.get("reference")
        info += f", reference {ref!r}" if ref else ", no reference: comparisons with a reference are off"
    return (f"<div class='dtlive-verdict' data-state='{summary['state']}' style='{_FONT}'>"
            "<div style='display:flex;align-items:baseline;gap:10px'>"
            "<b style='font-size:15px'>Drift-tube telescope: data quality</b>"
            f"<span class='dtlive-verdict-info' style='color:#555'>{html.escape(info)}</span></div>"
            "<div style='display:flex;gap:6px;margin-top:3px'>" + "".join(cards) + "</div></div>")


def duration_text(seconds: float) -> str:
    """A duration as people read it: ``4.2 s``, ``3 min 20 s``, ``2 h 05 min``.

    >>> duration_text(4.24), duration_text(200), duration_text(7500)
    ('4.2 s', '3 min 20 s', '2 h 05 min')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def status_html(status: dict, broker: str, broker_ok: bool | None, error: str | None, paused: bool,
                view: str, now: float | None = None, newest: int | None = None) -> str:
    """The status line as HTML (pure, so tests can check its wording).

    >>> "BROKER UNREACHABLE" in status_html({"state": "waiting", "windows": 0}, "h:1", False, "down", False, "last")
    True
    """
    now = time.time() if now is None else now
    if broker_ok is False:
        badge, color = "BROKER UNREACHABLE", "#c62828"
    elif status["state"] == "waiting":
        badge, color = "WAITING FOR DATA", "#ef6c00"
    elif status["state"] == "stale":
        badge, color = (f"NO NEW DATA for {duration_text(status['since_last_s'])} (processor or DAQ stopped?)",
                        "#ef6c00")
    elif status["state"] == "behind":
        badge, color = f"BEHIND: newest data {duration_text(status['data_age_s'])} old (catching up)", "#f9a825"
    else:
        badge, color = "LIVE", "#2e7d32"
    if paused:
        badge += " · PAUSED" + (f" (newest window {newest})" if newest is not None else "")
    parts = []
    if status.get("windows"):
        end = time.strftime("%H:%M:%S", time.gmtime(status["window_end"])) if np.isfinite(status["window_end"]) else "?"
        parts += [
            f"<b>window</b> <span class='dtlive-window-id'>{status['window_id']}</span> (ends {end} UTC)",
            f"<b>data age</b> {duration_text(status['data_age_s'])}"
            + (f" (clock {status['clock_ahead_s']:.0f} s ahead)" if status.get("clock_ahead_s", 0) >= 1 else ""),
            f"<b>input</b> {status['input_rows_per_s']:,.0f} rows/s",
            f"<b>windows/s</b> {status['windows_per_s']:.2f}",
            f"<b>rejects</b> {status['rejected_last']} last / {status['rejected_total']} total",
        ]
    parts.append(f"<b>view</b> <span class='dtlive-view'>{view}</span>")
    parts.append(f"<b>broker</b> {html.escape(broker)}")
    detail = ""
    if broker_ok is False:  # in words; the client's own message as the tooltip
        detail = (f"<div class='dtlive-status-detail' style='color:#c62828' title='{html.escape(error or '', True)}'>"
                  f"no answer from the broker at {html.escape(broker)}: retrying every second</div>")
    return (
        f"<div class='dtlive-status-line' style='{_FONT}'>"
        f"<span class='dtlive-state' style='background:{color};{_BADGE};font-weight:bold'>{badge}</span>&nbsp; "
        + " &nbsp;|&nbsp; ".join(parts) + detail + "</div>"
    )


def parse_analysis(value: bytes) -> dict:
    """A ``dtlive.analysis/1`` message as a dict (ValueError for anything else).

    >>> parse_analysis(b'{"schema": "dtlive.analysis/1", "analysis": "rate_excess", "status": "ok"}')["status"]
    'ok'
    >>> parse_analysis(b'{"schema": "dtlive.monitor/1"}')
    Traceback (most recent call last):
    ...
    ValueError: not a dtlive.analysis/1 message
    """
    msg = json.loads(value)
    if not isinstance(msg, dict) or msg.get("schema") != ANALYSIS_SCHEMA:
        raise ValueError("not a dtlive.analysis/1 message")
    return msg


def utc_to_second(text) -> str:
    """An ISO UTC time as ``YYYY-MM-DD HH:MM:SS`` (the rest of the text as it is when it is not one).

    >>> utc_to_second("2026-12-05T10:00:01.123456Z"), utc_to_second(None)
    ('2026-12-05 10:00:01', '')
    """
    text = "" if text is None else str(text)
    if len(text) >= 19 and text[4] == "-" and text[10] in "T ":
        return f"{text[:10]} {text[11:19]}"
    return text


class AlertPanel:
    """The newest canned-analysis results (from ``dt.analyses``) as a table, newest trigger first.

    One row per alert and analysis: a result received again (the same notice twice, a re-run) updates its row
    and says how often it came; significant results (>= 3 sigma) are highlighted, failed ones say why,
    retracted alerts are struck through.

    >>> panel = AlertPanel()
    >>> panel.add([{"alert_id": "Swift:1", "mission": "Swift", "analysis": "rate_excess",
    ...             "trigger_time": "2026-12-05T10:00:01.500000Z",
    ...             "summary": {"status": "ok", "max_significance_sigma": 1.25}}])
    >>> "Swift:1" in panel.widget.value and "1.2 σ" in panel.widget.value and "10:00:01<" in panel.widget.value
    True
    """

    def __init__(self, keep: int = 12):
        self.keep = keep
        self.rows: list[dict] = []
        self.widget = W.HTML(self._html())
        self.widget.add_class("dtlive-alerts")

    def add(self, messages: list[dict]) -> None:
        """Take parsed ``dtlive.analysis/1`` messages (from the alerts feed's thread) and redraw."""
        index = {(r.get("alert_id"), r.get("analysis")): i for i, r in enumerate(self.rows)}
        for m in messages:
            if m.get("retracted"):
                for r in self.rows:
                    if r.get("alert_id") == m.get("alert_id"):
                        r["retracted"] = True
                continue
            key = (m.get("alert_id"), m.get("analysis"))
            if key in index:
                old = self.rows[index[key]]
                self.rows[index[key]] = {**m, "copies": old.get("copies", 1) + 1,
                                         "retracted": old.get("retracted", False)}
            else:
                index[key] = len(self.rows)
                self.rows.append({**m, "copies": 1})
        self.rows.sort(key=lambda r: (str(r.get("trigger_time") or ""), float(r.get("published_at") or 0.0)),
                       reverse=True)
        del self.rows[self.keep:]
        self.widget.value = self._html()

    @staticmethod
    def _result(m: dict) -> tuple[str, str]:
        """(result text, row kind: significant / failed / nodata / ok)."""
        summary = m.get("summary") or {}
        status = summary.get("status") or m.get("status") or "ok"
        sig = summary.get("max_significance_sigma")
        if status == "error":
            return f"FAILED: {summary.get('reason') or 'no reason given'}", "failed"
        if status == "no_data":
            return f"no data: {summary.get('reason') or ''}".rstrip(": "), "nodata"
        if sig is None:
            return str(status), "ok"
        text = f"{sig:.1f} σ (chamber {summary.get('max_chamber')})"
        return text, "significant" if sig >= SIGNIFICANT_SIGMA else "ok"

    def _html(self) -> str:
        styles = {"significant": "background:#ffebee;color:#b71c1c;font-weight:bold", "failed": "color:#c62828",
                  "nodata": "color:#666", "ok": ""}
        td = "padding:1px 10px 1px 0;white-space:nowrap"
        cells = []
        for m in self.rows:
            result, kind = self._result(m)
            notes = []
            if m.get("copies", 1) > 1:
                notes.append(f"received {m['copies']}x (duplicates shown once)")
            if m.get("retracted"):
                notes.append("retracted")
            style = styles[kind] + (";text-decoration:line-through;color:#888" if m.get("retracted") else "")
            cells.append(
                f"<tr class='dtlive-alert-row' data-kind='{kind}' data-copies='{m.get('copies', 1)}' style='{style}'>"
                f"<td style='{td};font-family:monospace'>{html.escape(utc_to_second(m.get('trigger_time')))}</td>"
                f"<td style='{td}'>{html.escape(str(m.get('mission') or ''))}</td>"
                f"<td style='{td}'>{html.escape(str(m.get('alert_id')))}</td>"
                f"<td style='{td}'>{html.escape(str(m.get('analysis')))}</td>"
                f"<td style='{td};text-align:right;font-variant-numeric:tabular-nums'>{html.escape(result)}</td>"
                f"<td style='{td};color:#666'>{html.escape('; '.join(notes))}</td></tr>")
        head = "".join(f"<th style='text-align:{a};{td}'>{t}</th>" for t, a in (
            ("trigger (UTC)", "left"), ("mission", "left"), ("alert", "left"), ("analysis", "left"),
            ("result", "right"), ("", "left")))
        body = "".join(cells) or ("<tr><td colspan='6' style='color:#666;padding-top:4px'>no alert received yet"
                                  "</td></tr>")
        return (f"<div style='{_FONT}'><b style='font-size:14px'>Astrophysical alerts</b> "
                f"<span style='color:#666'>newest first; significant (&ge; {SIGNIFICANT_SIGMA:g} σ) highlighted"
                "</span><table style='font-size:12px;border-collapse:collapse;margin-top:2px'>"
                f"<tr>{head}</tr>{body}</table></div>")


def health_html(rows: list[dict], alarms: list[str]) -> str:
    """The services' health as one line of HTML (pure): a badge, then one compact entry per service instance
    (rows and alarms of :class:`dtlive.kafka.health.ServiceHealth`), an alarmed one in red.

    >>> "ALARM" in health_html([], ["processor on h (pid 1): no heartbeat for 9 s"])
    True
    """
    if alarms:
        badge, color = "ALARM: " + "; ".join(alarms), "#c62828"
    elif rows:
        badge, color = f"SERVICES OK ({len(rows)})", "#2e7d32"
    else:
        badge, color = "NO SERVICE HEARTBEATS", "#757575"
    entries = []
    for r in rows:
        lag = "" if r.get("lag_messages") is None else f", input lag {r['lag_messages']} msgs"
        if r.get("lag_s") is not None:
            lag += f" ({round(r['lag_s'], 1) + 0.0:.1f} s)"
        first = next(iter((r.get("rates") or {}).items()), None)
        rate = f", {first[0].removesuffix('_per_s')} {first[1]:,.1f}/s" if first else ""
        errors = f", {r['errors_total']} errors" if r.get("errors_total") else ""
        bad = r.get("alarm") is not None
        style = "color:#c62828;font-weight:bold" if bad else "color:#333"
        state = str(r["state"]).upper() if bad else str(r["state"])
        entries.append(
            f"<span class='dtlive-health-row' data-service='{html.escape(str(r['service']))}' "
            f"data-pid='{r['pid']}' data-state='{html.escape(str(r['state']))}' "
            f"title='{html.escape(str(r['host']), quote=True)}:{r['pid']}' style='{style};white-space:nowrap'>"
            f"<b>{html.escape(str(r['service']))}</b> <span class='dtlive-health-state'>{html.escape(state)}</span>"
            f" ({r['age_s']:.1f} s ago{html.escape(lag)}{html.escape(rate)}{errors})</span>")
    return (f"<div class='dtlive-health-line' style='{_FONT};display:flex;flex-wrap:wrap;gap:4px 16px;"
            f"align-items:baseline'><b>services</b> "
            f"<span class='dtlive-health-badge' style='background:{color};{_BADGE}'>{html.escape(badge)}</span>"
            + "".join(entries) + "</div>")


class HealthPanel:
    """Service health from the heartbeats on ``dt.status``: a badge (an alarm when a heartbeat is missing,
    irregular or reports errors) and a compact table, one row per service instance.

    >>> from dtlive.kafka.health import status_message
    >>> panel = HealthPanel()
    >>> panel.add([status_message("processor", run_id="r", state="running", seq=0, now=100.0, host="h", pid=1)],
    ...           now=101.0)
    >>> "SERVICES OK" in panel.widget.value
    True
    >>> panel.refresh(now=110.0); panel.alarms
    ['processor on h (pid 1): no heartbeat for 10 s']
    """

    def __init__(self, health=None):
        from dtlive.kafka.health import ServiceHealth

        self.health = health if health is not None else ServiceHealth()
        self.alarms: list[str] = []
        self.widget = W.HTML(health_html([], []))
        self.widget.add_class("dtlive-health")

    def add(self, messages: list[dict], now: float | None = None) -> None:
        """Take parsed ``dtlive.status/1`` heartbeats (from the status feed's thread) and redraw."""
        self.health.add(messages)
        self.refresh(now)

    def refresh(self, now: float | None = None) -> None:
        """Redraw (also without new heartbeats: that is how a missing one becomes an alarm)."""
        rows = self.health.rows(now)
        self.alarms = [f"{r['service']} on {r['host']} (pid {r['pid']}): {r['alarm']}" for r in rows if r["alarm"]]
        value = health_html(rows, self.alarms)
        if value != self.widget.value:
            self.widget.value = value
