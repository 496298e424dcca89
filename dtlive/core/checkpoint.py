"""The processor's checkpoint: where a restarted processor resumes, as committed on ``<output>.checkpoints``.

One JSON record per transaction, keyed by the processor's ``group_id``. Partitions are JSON object keys, so
strings on the wire and ints here. Records written by older versions (fields missing or null) read with the
defaults of the missing fields.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields


def _by_partition(value) -> dict:
    """A JSON object keyed by partition (strings on the wire) with int keys; empty for a missing one."""
    return {int(k): v for k, v in (value or {}).items()}


def _on_wire(value: dict) -> dict:
    return {str(k): v for k, v in value.items()}


@dataclass
class Checkpoint:
    """The committed state of a processor, from which a restart goes on without losing or recounting input.

    Attributes
    ----------
    last_window
        The last window published (-1: none yet); hits of windows up to it are late.
    window_orbits
        Window length in orbits (None when not known, e.g. read from a published window).
    positions
        Per partition, the next offset whose rows are not counted yet; rows before it were counted.
    restart_offsets
        Per partition, the offset from which a restart must re-read (rows of windows not yet published).
    pending_counts
        Counts (rows, rejects by reason, ...) not yet carried by a published window.
    orbit_epoch
        UNIX seconds of orbit 0, None while unknown.
    held_offsets
        Per partition, offsets of rows held back far ahead of their partition, waiting for evidence.
    processor, config_hash, input_topic, run_id, time
        Who wrote it: the processor's ``group_id``, its processing settings' hash, its input topic, its run
        and when (UNIX seconds; the newest record wins).

    Examples
    --------
    >>> c = Checkpoint(last_window=7, positions={0: 120}, restart_offsets={0: 100}, pending_counts={"rows": 3})
    >>> wire = c.to_json()
    >>> wire["positions"], wire["restart_offsets"]
    ({'0': 120}, {'0': 100})
    >>> Checkpoint.from_json(json.loads(json.dumps(wire))) == c
    True
    >>> Checkpoint.from_json({"last_window": 2, "pending_counts": None}).pending_counts
    {}
    """

    last_window: int = -1
    window_orbits: int | None = None
    positions: dict[int, int] = field(default_factory=dict)
    restart_offsets: dict[int, int] = field(default_factory=dict)
    pending_counts: dict[str, int] = field(default_factory=dict)
    orbit_epoch: float | None = None
    held_offsets: dict[int, list[int]] = field(default_factory=dict)
    processor: str | None = None
    config_hash: str | None = None
    input_topic: str | None = None
    run_id: str | None = None
    time: float = 0.0

    def to_json(self) -> dict:
        """The record as committed (JSON-ready; partition keys as strings)."""
        out = asdict(self)
        for name in ("positions", "restart_offsets", "held_offsets"):
            out[name] = _on_wire(out[name])
        return out

    def to_bytes(self) -> bytes:
        """The record's Kafka value."""
        return json.dumps(self.to_json()).encode()

    @classmethod
    def from_json(cls, record: dict) -> Checkpoint:
        """A committed record; fields it lacks (older versions) or holds as null take their defaults,
        fields unknown here are ignored."""
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in record.items() if k in known and v is not None}
        for name in ("positions", "restart_offsets", "held_offsets"):
            given[name] = _by_partition(given.get(name))
        given["pending_counts"] = dict(given.get("pending_counts") or {})
        if "last_window" in given:
            given["last_window"] = int(given["last_window"])
        return cls(**given)

    @classmethod
    def from_provenance(cls, window_id: int, provenance: dict) -> Checkpoint:
        """Where a processor resumes after publishing window ``window_id`` with this provenance (its result
        message's): a checkpoint newer than the last one committed, which the window's transaction carried.

        Its pending counts are empty: they went out with the window.

        >>> prov = {"processor": "p", "config_hash": "abc", "orbit_epoch": 1.7e9,
        ...         "input_position": [{"topic": "dt.hits", "partition": 0, "offset": 50}],
        ...         "restart_offsets": [{"topic": "dt.hits", "partition": 0, "offset": 40}]}
        >>> c = Checkpoint.from_provenance(3, prov)
        >>> c.last_window, c.positions, c.restart_offsets, c.config_hash
        (3, {0: 50}, {0: 40}, 'abc')
        """
        return cls(
            last_window=int(window_id),
            positions={int(x["partition"]): x["offset"] for x in provenance.get("input_position", [])},
            restart_offsets={int(x["partition"]): x["offset"] for x in provenance.get("restart_offsets", [])},
            orbit_epoch=provenance.get("orbit_epoch"),
            processor=provenance.get("processor"),
            config_hash=provenance.get("config_hash"),
            run_id=provenance.get("run_id"),
        )
