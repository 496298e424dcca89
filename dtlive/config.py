"""One configuration model, read from CLI flags, then the environment, then a file.

Precedence: a CLI flag beats ``DTLIVE_<NAME>`` in the environment, which beats the
TOML file (``--config FILE`` or ``DTLIVE_CONFIG``), which beats the defaults.
librdkafka settings pass through from ``KAFKA_*`` variables, as in gcn-kafka:
``KAFKA_SASL_MECHANISM=PLAIN`` becomes ``sasl.mechanism=PLAIN``.

The defaults of :class:`Config` are the only place a topic name, consumer group or service default is
written down: a service reads them from its ``Config``, and code that needs a default without one
(a function's default argument, a help text) names the class attribute (``Config.monitor_topic``), so a
renamed topic changes everywhere at once. Schema ids and header names are not settings: they live in
:mod:`dtlive.core.messages`; detector facts in :mod:`dtlive.core.detector`.

>>> cfg = load_config({"window_s": 3}, env={"DTLIVE_WINDOW_S": "4", "KAFKA_LINGER_MS": "5"})
>>> cfg.window_s, cfg.kafka
(3.0, {'linger.ms': '5'})
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Settings that change the numbers a processor publishes: they make up the config hash.
PROCESSING_KEYS = ("window_s", "lateness_s", "default_format", "drift_bin_ns", "drift_min_ns", "drift_max_ns",
                   "reconstruction")


@dataclass(frozen=True)
class Config:
    """Everything a dtlive service can be told.

    >>> cfg = Config(window_s=4.0)
    >>> cfg.window_s, cfg.monitor_topic, len(cfg.config_hash) > 0
    (4.0, 'dt.monitor', True)
    """

    bootstrap: str | None = None  # Kafka bootstrap; None: the embedded broker recorded by `dtlive broker`
    hits_topic: str = "dt.hits"
    monitor_topic: str = "dt.monitor"
    rejected_topic: str = "dt.hits.rejected"
    quality_topic: str = "dt.quality"  # data-quality periods (dtlive.quality/1) and verdicts (dtlive.quality/2)
    alarm_topic: str = "dt.alarms"  # chamber-status alarm events and acknowledgements (dtlive.alarm/1)
    alarm_notify: tuple[str, ...] = ()  # apprise URLs people are told alarms at (TOML list; env: comma-separated)
    alarm_notify_limit: int = 10  # at most this many notifications per alarm_notify_minutes; the rest summarised
    alarm_notify_minutes: float = 10.0
    analyses_topic: str = "dt.analyses"  # canned-analysis results (dtlive.analysis/1)
    alert_topics: str = "gcn.notices.*,gcn.classic.voevent.*,igwn.gwalert"  # comma-separated topic patterns
    alerts_rejected_topic: str = "dt.alerts.rejected"  # broken or unknown notices, with a reason header
    alerts_group_id: str = "dtlive-alerts"  # the listener's stable consumer group
    status_topic: str = "dt.status"  # service heartbeats (dtlive.status/1), see dtlive.kafka.health
    status_interval_s: float = 2.0  # seconds between a service's heartbeats; 0 switches them off
    watchdog_s: float = 60.0  # a service whose input waits with nothing processed this long exits non-zero (0: never)
    reference: str = "default"  # name of the quality-test reference (<history>/references/NAME.nc); "" for none
    judge_windows: int = 5  # windows a lumi block judged by the recorder against the reference; 0 switches it off
    judge_during_outage: bool = False  # the recorder judges ahead (verdicts and alarms go out) while the ledger is away
    certify_max_status: int = 2  # a lumi block is certified good for a chamber judged with a status <= this (0..4)
    quality_tests: str = ""  # TOML file of the quality tests; "" for the packaged defaults (dtlive.core.judge)
    history_retention_days: float = 0.0  # history older than this is deleted by the recorder; 0 keeps everything
    dashboard_kernel_grace_s: float = 10.0  # a dashboard kernel with no page connected this long is shut down
    dashboard_kernel_idle_s: float = 3600.0  # a dashboard kernel idle this long is culled (connected pages keep it)
    window_s: float = 2.0  # event-time window length
    # watermark lateness allowance: how far a partition's hits may run behind its newest one and still be counted
    # (the DAQ sends each FPGA's hits in time order: run 591 is never more than one orbit, 89 us, behind)
    lateness_s: float = 0.1
    idle_s: float = 3.0  # wall-clock seconds without input before open windows are flushed
    default_format: str = "csv"  # payload format assumed when a message has no format header
    drift_bin_ns: float = 5.0
    drift_min_ns: float = -100.0
    drift_max_ns: float = 500.0
    reconstruction: bool = True  # muon events, t0, time boxes and segments per window; off: counts only, faster
    group_id: str = "dtlive-processor"  # consumer group and transactional-id stem of the processor
    dead_letter_max_bytes: int = 64 * 1024  # dead letters are cut to this, far below librdkafka's 1 MB message limit
    data_dir: str = ""  # folder of DAQ files for notebooks and examples (run000591_hits.csv); "" for none
    max_orbit_jump_s: float = 30.0  # hits this far ahead of their partition's stream need evidence (0: no check)
    kafka: dict[str, str] = field(default_factory=dict)  # librdkafka settings from KAFKA_* variables

    def alert_topic_patterns(self) -> list[str]:
        """``alert_topics`` as a list of patterns."""
        return [t.strip() for t in self.alert_topics.split(",") if t.strip()]

    def processing(self) -> dict:
        """The settings that determine published numbers."""
        return {k: getattr(self, k) for k in PROCESSING_KEYS}

    @property
    def config_hash(self) -> str:
        """Short, stable hash of :meth:`processing`."""
        return hashlib.sha256(json.dumps(self.processing(), sort_keys=True).encode()).hexdigest()[:12]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def kafka_settings_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """``KAFKA_FOO_BAR=x`` -> ``{"foo.bar": "x"}`` (the gcn-kafka convention).

    >>> kafka_settings_from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_": "x", "HOME": "/root"})
    {'security.protocol': 'SASL_SSL'}
    """
    return {k[6:].lower().replace("_", "."): v for k, v in env.items() if k.startswith("KAFKA_") and len(k) > 6}


def _flatten(table: Mapping, prefix: str = "") -> dict[str, str]:
    """TOML ``linger.ms = 5`` parses as ``{"linger": {"ms": 5}}``: join the keys back with dots."""
    out: dict[str, str] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _coerce(name: str, value):
    kind = {f.name: f.type for f in dataclasses.fields(Config)}[name]
    if value is None:
        return None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} must be true or false, not {value!r}")
    if "tuple" in kind:  # a TOML list, or text separated by commas or blanks (environment, CLI)
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        return tuple(str(v).strip() for v in items if str(v).strip())
    if "float" in kind:
        return float(value)
    if "int" in kind:
        return int(value)
    if "dict" in kind:
        return dict(value)
    return str(value)


def load_config(
    cli: Mapping | None = None, env: Mapping[str, str] | None = None, file: str | Path | None = None
) -> Config:
    """Build the :class:`Config` from CLI values (None = not given), environment and file.

    >>> cfg = load_config({"window_s": 3}, env={"DTLIVE_WINDOW_S": "4", "DTLIVE_LATENESS_S": "1"})
    >>> cfg.window_s, cfg.lateness_s  # the CLI value wins over the environment
    (3.0, 1.0)
    """
    env = os.environ if env is None else env
    names = [f.name for f in dataclasses.fields(Config) if f.name != "kafka"]
    values: dict = {}
    path = file or env.get("DTLIVE_CONFIG")
    kafka: dict[str, str] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"configuration file {p} does not exist")
        data = tomllib.loads(p.read_text())
        data = data.get("dtlive", data)
        unknown = set(data) - set(names) - {"kafka"}
        if unknown:
            raise ValueError(f"unknown settings in {p}: {', '.join(sorted(unknown))} (known: {', '.join(names)})")
        kafka.update(_flatten(data.pop("kafka", {})))
        values.update(data)
    for name in names:
        if f"DTLIVE_{name.upper()}" in env:
            values[name] = env[f"DTLIVE_{name.upper()}"]
    kafka.update(kafka_settings_from_env(env))
    unknown = set(cli or {}) - set(names)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))} (known: {', '.join(names)})")
    for name, value in (cli or {}).items():
        if value is not None:
            values[name] = value
    cfg = Config(**{k: _coerce(k, v) for k, v in values.items()}, kafka=kafka)
    if not 1 <= cfg.window_s <= 5:
        raise ValueError(f"window_s must be 1 to 5 seconds, got {cfg.window_s}")
    if cfg.lateness_s < 0:
        raise ValueError(f"lateness_s must be >= 0, got {cfg.lateness_s}")
    if not 1024 <= cfg.dead_letter_max_bytes <= 900_000:
        raise ValueError(f"dead_letter_max_bytes must be 1024 to 900000 (below the broker's 1 MB limit), "
                         f"got {cfg.dead_letter_max_bytes}")
    if cfg.judge_windows < 0:
        raise ValueError(f"judge_windows must be >= 0 (0: no judging), got {cfg.judge_windows}")
    if cfg.alarm_notify_limit < 1 or cfg.alarm_notify_minutes <= 0:
        raise ValueError(f"alarm_notify_limit must be >= 1 and alarm_notify_minutes > 0, got "
                         f"{cfg.alarm_notify_limit} per {cfg.alarm_notify_minutes} min")
    if not 0 <= cfg.certify_max_status <= 4:
        raise ValueError(f"certify_max_status must be 0 (ok) to 4 (bad), got {cfg.certify_max_status}")
    if cfg.max_orbit_jump_s < 0:
        raise ValueError(f"max_orbit_jump_s must be >= 0, got {cfg.max_orbit_jump_s}")
    return cfg
