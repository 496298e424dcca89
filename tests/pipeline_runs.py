"""The real run through the real pipeline, and what it must give: figures computed independently with pandas."""

from __future__ import annotations

import pandas as pd
from confluent_kafka import Producer

from dtlive.config import load_config
from dtlive.kafka.emulator import emulate, file_chunks
from dtlive.streaming.processor import Processor


def expected_products(path) -> dict:
    """Whole-file figures computed with pandas only."""
    df = pd.read_csv(path)
    hits = df[df.HEAD == 2].astype({"TDC_CHANNEL": int, "FPGA": int, "ORBIT_CNT": "int64"})
    cham = hits[hits.TDC_CHANNEL < 128].copy()
    cham["chamber"] = 2 * cham.FPGA + cham.TDC_CHANNEL // 64
    occupancy = {c: cham[cham.chamber == c].TDC_CHANNEL.value_counts().to_dict() for c in range(4)}
    nunique = cham.groupby(["ORBIT_CNT", "chamber"]).TDC_CHANNEL.nunique().reset_index()
    mult = {c: nunique[nunique.chamber == c].TDC_CHANNEL.value_counts().to_dict() for c in range(4)}
    return {"total": len(hits), "per_chamber": [int((cham.chamber == c).sum()) for c in range(4)],
            "occupancy": occupancy, "multiplicity": mult, "rows": len(df), "ancillary": int((df.HEAD != 2).sum())}


def produce_file(bootstrap, topic, path, fmt, rows_per_message=None):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    return emulate(producer, topic, file_chunks([str(path)]), rate=None, fmt=fmt, rows_per_message=rows_per_message,
                   progress=False)


def process_all(bootstrap, topics, **cli):
    cfg = load_config({"bootstrap": bootstrap, **topics, **cli}, env={})
    proc = Processor(cfg, bootstrap, from_beginning=True)
    proc.run(until_end=True, max_seconds=120)
    proc.close()
    return proc


def assert_matches(ds, exp):
    total = ds.sum("time")
    assert int(total.total_hits) == exp["total"]
    assert total.hits_per_chamber.values.tolist() == exp["per_chamber"]
    for c in range(4):
        occ = total.channel_occupancy.sel(chamber=c)
        got = {int(ch): int(n) for ch, n in zip(occ.tdc_channel.values, occ.values) if n}
        assert got == exp["occupancy"][c]
        mult = total.active_channels_per_orbit.sel(chamber=c)
        assert {int(k): int(n) for k, n in zip(mult.multiplicity.values, mult.values) if n} == exp["multiplicity"][c]
