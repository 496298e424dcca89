"""The processing graph: ``source -> dt_decode_hits -> dt_clean_hits -> dt_event_windows``, built from a
:class:`~dtlive.config.Config` and the :class:`~dtlive.core.checkpoint.Checkpoint` it resumes from.

The processor, the Dask actors and the file replay all run this graph; only what feeds it differs.

>>> from streamz import Stream
>>> from dtlive.config import load_config
>>> from dtlive.streaming.nodes import Batch
>>> src = Stream()
>>> windows = window_graph(src, load_config({}, env={}), Checkpoint(positions={0: 1}))
>>> out = windows.sink_to_list()
>>> src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"2,0,5,400,7,3", b"2,0,5,100000,7,3"], "csv"))
>>> [(w.id, len(w.hits), w.meta["counts"]["rows"]) for w in out]  # offset 0's row was counted before a restart
[(0, 2, 2)]
"""

from __future__ import annotations

from streamz import Stream

from dtlive.config import Config
from dtlive.core.checkpoint import Checkpoint
from dtlive.streaming import nodes as _nodes  # noqa: F401  (registers the node methods on Stream)
from dtlive.streaming.nodes import dt_clean_hits, dt_decode_hits, dt_event_windows, dt_from_kafka_batched_consumer


def hit_graph(source: Stream, default_format: str = "csv", resume: dict[int, int] | None = None) -> dt_clean_hits:
    """``source -> dt_decode_hits -> dt_clean_hits``: batches to the hit rows not counted before ``resume``
    (per partition, the offset up to which an earlier run counted rows).

    >>> from dtlive.streaming.nodes import Batch
    >>> src = Stream()
    >>> out = hit_graph(src, resume={0: 1}).sink_to_list()
    >>> src.emit(Batch.from_payloads([b"2,0,5,100,7,3", b"0,0,5,100,7,3", b"2,1,3,101,0,0"], "csv"))
    >>> out[0].rows.channel.tolist(), dict(out[0].counts)  # offset 0 was counted by an earlier run
    ([5, 3], {'rows': 2, 'ancillary': 1})
    """
    return source.dt_decode_hits(default_format=default_format, resume=resume).dt_clean_hits()


def window_graph(source: Stream, cfg: Config, checkpoint: Checkpoint | None = None,
                 default_format: str | None = None) -> dt_event_windows:
    """``source -> dt_decode_hits -> dt_clean_hits -> dt_event_windows`` with ``cfg``'s window settings,
    resuming from ``checkpoint`` (default: a first run).

    ``default_format``: payload format of messages without a format header (default ``cfg.default_format``).

    >>> from dtlive.config import load_config
    >>> source = Stream()
    >>> windows = window_graph(source, load_config({}, env={}))
    >>> closed = windows.sink_to_list()
    >>> type(windows).__name__
    'dt_event_windows'
    """
    ckpt = checkpoint or Checkpoint()
    windows = hit_graph(source, default_format or cfg.default_format, ckpt.positions).dt_event_windows(
        window_s=cfg.window_s,
        lateness_s=cfg.lateness_s,
        idle_s=cfg.idle_s,
        last_closed=ckpt.last_window,
        orbit_epoch=ckpt.orbit_epoch,
        pending=ckpt.pending_counts,
        max_jump_s=cfg.max_orbit_jump_s,
        held=ckpt.held_offsets,
    )
    windows.positions.update(ckpt.positions)
    return windows


def read_input_again(windows: dt_event_windows) -> None:
    """The broker was replaced and the input topic created anew: read every partition of the graph's Kafka source
    again from its beginning. Offsets remembered from the old topic mean nothing there (a fetch beyond a log's end
    just returns nothing, so they would skip what the new topic holds); open windows keep their hits.

    >>> from dtlive.config import load_config
    >>> cfg = load_config({}, env={})
    >>> src = Stream.dt_from_kafka_batched_consumer(cfg.hits_topic, {"bootstrap.servers": "127.0.0.1:9092"})
    >>> windows = window_graph(src, cfg)
    >>> src.poll()  # doctest: +SKIP
    >>> read_input_again(windows)  # doctest: +SKIP
    """
    source = upstream_of(windows, dt_from_kafka_batched_consumer)
    source.restart_from_beginning()
    windows.restart_input(source.partitions)
    upstream_of(windows, dt_decode_hits).resume.clear()


def upstream_of(node: Stream, kind: type) -> Stream:
    """The nearest node of type ``kind`` upstream of ``node`` (e.g. the decoder of a window graph).

    >>> from streamz import Stream
    >>> from dtlive.streaming.nodes import dt_decode_hits
    >>> windows = window_graph(Stream(), Config())
    >>> type(upstream_of(windows, dt_decode_hits)).__name__
    'dt_decode_hits'
    """
    todo = list(node.upstreams)
    while todo:
        up = todo.pop(0)
        if isinstance(up, kind):
            return up
        todo += list(up.upstreams)
    raise LookupError(f"no {kind.__name__} upstream of {type(node).__name__}")
