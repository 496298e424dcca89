"""The processor's memory settings: heap trims at a fixed interval (dtlive.service.heap), bounded consume calls."""

import pytest
from confluent_kafka import Producer
from datafiles import SAMPLE_CSV

import dtlive.service.heap as heap
from dtlive.config import load_config
from dtlive.deploy.cli import build_parser
from dtlive.kafka.clients import ensure_topics
from dtlive.kafka.emulator import emulate, file_chunks
from dtlive.streaming.processor import BATCH_SIZE, TRIM_INTERVAL_S, Processor


def test_trimmer_trims_once_per_interval_and_never_with_interval_zero(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "trim", lambda: calls.append(1) or True)
    t = heap.HeapTrimmer(interval_s=30.0, last=100.0)
    assert [t.maybe(now) for now in (110.0, 130.0, 140.0, 159.9, 160.0)] == [False, True, False, False, True]
    assert t.count == len(calls) == 2
    never = heap.HeapTrimmer(interval_s=0, last=0.0)
    assert not never.maybe(1e9) and never.count == 0


def test_trim_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(heap, "_malloc_trim", None)
    assert heap.trim() is False


@pytest.mark.kafka
def test_processor_trims_the_heap_while_it_runs(broker, topics, monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "trim", lambda: calls.append(1) or True)
    cfg = load_config({"bootstrap": broker, **topics}, env={})
    ensure_topics(cfg, broker, [topics["hits_topic"]])
    emulate(Producer({"bootstrap.servers": broker}), topics["hits_topic"], file_chunks([str(SAMPLE_CSV)]), rate=None,
            progress=False)
    default = Processor(cfg, broker, from_beginning=True)
    assert default.trimmer.interval_s == TRIM_INTERVAL_S > 0
    assert default.source.batch_size == BATCH_SIZE == build_parser().parse_args(["process"]).batch_size
    default.close()
    proc = Processor(cfg, broker, from_beginning=True, trim_interval_s=0.3)
    proc.run(max_seconds=1.5)  # the input is read at once; the loop goes on polling (0.2 s) until then
    proc.close()
    assert proc.source.messages > 0 and proc.trimmer.count == len(calls) >= 2


def test_freeze_keeps_startup_objects_out_of_collections_and_still_collects_new_garbage():
    import gc

    class Node:
        pass

    try:
        frozen = heap.freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 1000  # the interpreter, pytest and the imported modules
        a, b = Node(), Node()
        a.other, b.other = b, a  # a reference cycle made after the freeze
        del a, b
        assert gc.collect() >= 2
    finally:
        gc.unfreeze()


def test_services_freeze_their_startup_objects_and_collect_less_often_while_running(monkeypatch):
    from dtlive.service.shutdown import serve

    calls = []
    monkeypatch.setattr(heap, "freeze_startup_objects", lambda: calls.append("freeze") or 0)

    import gc

    class Service:
        def stop(self, *_):
            pass

        def run(self, **kwargs):
            calls.append(("run", kwargs, gc.get_threshold()[0]))

        def close(self):
            calls.append("close")

    before = gc.get_threshold()
    serve(Service, until_end=True)
    assert calls == ["freeze", ("run", {"until_end": True}, heap.GEN0_THRESHOLD), "close"]
    assert gc.get_threshold() == before  # what the service changed ends with it


def _module_file(tmp_path, name: str) -> None:
    """A module that makes objects the collector tracks: a class and a list of dicts."""
    (tmp_path / f"{name}.py").write_text("class Made:\n    pass\n\nMADE = [{'i': i} for i in range(500)]\n")


def _tracked(obj) -> bool:
    """Whether ``obj`` is in one of the collector's generations (frozen objects are in none)."""
    import gc

    return any(o is obj for o in gc.get_objects())


def test_import_freezer_freezes_what_a_later_import_made_and_only_then(tmp_path, monkeypatch):
    import gc
    import importlib
    import sys

    name = f"late_module_{id(tmp_path)}"
    _module_file(tmp_path, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        freezer = heap.ImportFreezer()
        assert not freezer.maybe()
        module = importlib.import_module(name)
        before = gc.get_freeze_count()
        assert _tracked(module.MADE) and _tracked(module.Made)
        assert freezer.maybe() and freezer.count == 1
        assert gc.get_freeze_count() >= before + 500
        assert not _tracked(module.MADE) and not _tracked(module.MADE[0]) and not _tracked(module.Made)
        assert not freezer.maybe() and freezer.count == 1  # nothing imported since
    finally:
        sys.modules.pop(name, None)
        gc.unfreeze()


@pytest.mark.kafka
def test_processor_freezes_the_objects_of_modules_imported_while_it_runs(broker, topics, tmp_path, monkeypatch):
    import gc
    import importlib
    import sys

    name = f"late_module_{id(tmp_path)}"
    _module_file(tmp_path, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config({"bootstrap": broker, **topics}, env={})
    ensure_topics(cfg, broker, [topics["hits_topic"]])
    emulate(Producer({"bootstrap.servers": broker}), topics["hits_topic"], file_chunks([str(SAMPLE_CSV)]), rate=None,
            progress=False)
    proc = Processor(cfg, broker, from_beginning=True)
    imported = []
    try:
        # on_tick runs in the loop after a turn's housekeeping: the import lands between two turns, as a first
        # window's lazy imports do
        proc.run(max_seconds=2.5, on_tick=lambda p: imported.append(importlib.import_module(name)))
        assert proc.source.messages > 0 and imported
        assert proc.late_imports.count >= 1
        assert not _tracked(imported[0].MADE) and not _tracked(imported[0].Made)
    finally:
        proc.close()
        sys.modules.pop(name, None)
        gc.unfreeze()


def test_collections_start_only_after_the_allocation_threshold():
    import gc

    starts = []

    def count(phase, info):
        if phase == "start" and info["generation"] == 0:
            starts.append(1)

    gc.collect()  # the allocation count starts at 0
    gc.callbacks.append(count)
    before = heap.collect_less_often(20_000)
    try:
        made = [[i] for i in range(15_000)]  # 15,000 tracked objects alive: below the threshold
        assert not starts
        made += [[i] for i in range(10_000)]  # past it
        assert starts
    finally:
        gc.set_threshold(*before)
        gc.callbacks.remove(count)
