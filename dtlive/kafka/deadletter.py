"""Dead letters that always fit on the broker: the record to produce for one rejected input.

A rejected payload can be as big as anything a producer managed to send (a whole file in one
message, a runaway line). Produced as it is it would exceed the broker's message-size limit
(librdkafka's ``message.max.bytes`` is 1 MB by default) and make the produce, or the whole
transaction it belongs to, fail. :func:`dead_letter` keeps at most ``max_bytes`` of the payload
and says in headers what was cut: the original size, a SHA-256 of the original payload and the
source topic / partition / offset, so the original can always be found and checked.

>>> d = dead_letter(b"x" * 100, "oversized", "", "dt.hits", 0, 42, max_bytes=10)
>>> d.value, d.header("truncated"), d.header("original_size"), d.header("source_offset")
(b'xxxxxxxxxx', 'true', '100', '42')
>>> dead_letter(b"2,0,5", "field_count", "", "dt.hits", 0, 7).header("truncated")
'false'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from dtlive.config import Config

__all__ = ["DEFAULT_MAX_BYTES", "MAX_DETAIL_BYTES", "DeadLetter", "dead_letter"]

DEFAULT_MAX_BYTES = Config.dead_letter_max_bytes  # the configured default (64 KiB)
MAX_DETAIL_BYTES = 512  # the free-text detail header is cut to this many bytes
_MAX_TOPIC_BYTES = 249  # Kafka's longest topic name


@dataclass(frozen=True)
class DeadLetter:
    """The value and headers of one dead-letter record.

    >>> d = dead_letter(b"2,0,5,100", "field_count", "4 fields", "dt.hits", 3, 17)
    >>> d.value, d.header("reason"), d.header("source_partition"), d.header("nothing")
    (b'2,0,5,100', 'field_count', '3', None)
    """

    value: bytes
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        """One header's value as text (None if absent).

        >>> DeadLetter(b"", [("reason", b"late")]).header("reason")
        'late'
        """
        return next((v.decode(errors="replace") for k, v in self.headers if k == name), None)


def dead_letter(
    payload: bytes | bytearray | memoryview | None,
    reason: str,
    detail: str,
    source_topic: str,
    partition: int,
    offset: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DeadLetter:
    """The dead-letter record of one rejected payload: value cut to ``max_bytes``, headers to find the original.

    Headers: ``reason``, ``detail`` (at most :data:`MAX_DETAIL_BYTES`), ``source_topic``,
    ``source_partition``, ``source_offset``, ``original_size`` (bytes), ``sha256`` (hex digest of the
    whole original payload) and ``truncated`` (``true`` when the value is only the first ``max_bytes``).

    >>> d = dead_letter(b"abc", "empty", "a detail", "t", 1, 2, max_bytes=2)
    >>> [k for k, _ in d.headers]
    ['reason', 'detail', 'source_topic', 'source_partition', 'source_offset', 'original_size', 'sha256', 'truncated']
    >>> d.header("sha256") == hashlib.sha256(b"abc").hexdigest(), d.value
    (True, b'ab')
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    original = bytes(payload) if payload is not None else b""
    truncated = len(original) > max_bytes
    headers = [
        ("reason", reason.encode(errors="replace")[:_MAX_TOPIC_BYTES]),
        ("detail", _cut_text(detail, MAX_DETAIL_BYTES)),
        ("source_topic", source_topic.encode(errors="replace")[:_MAX_TOPIC_BYTES]),
        ("source_partition", str(int(partition)).encode()),
        ("source_offset", str(int(offset)).encode()),
        ("original_size", str(len(original)).encode()),
        ("sha256", hashlib.sha256(original).hexdigest().encode()),
        ("truncated", b"true" if truncated else b"false"),
    ]
    return DeadLetter(original[:max_bytes] if truncated else original, headers)


def _cut_text(text: str, limit: int) -> bytes:
    """``text`` as UTF-8, cut to ``limit`` bytes without splitting a character."""
    raw = text.encode(errors="replace")
    if len(raw) <= limit:
        return raw
    return raw[:limit].decode(errors="ignore").encode()
