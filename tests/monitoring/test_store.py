"""Segment store: framing, torn-tail recovery, rotation, retention, dedupe across restarts, group commit."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from slipway.core.errors import StoreError
from slipway.monitoring.store import (
    HEADER,
    Record,
    SegmentStore,
    StoreConfig,
    frame,
    iter_records_newest_first,
    parse_frames,
    segment_paths,
)


def _keys(data_dir: Path) -> list[str]:
    return [r.key for r in iter_records_newest_first(data_dir)][::-1]


def test_frame_roundtrip_and_corruption_detected() -> None:
    frames = frame(Record("request:a", b'{"x":1}')) + frame(Record("request:b", b"payload"))
    records, end = parse_frames(frames)
    assert [r.key for r in records] == ["request:a", "request:b"] and end == len(frames)
    flipped = bytearray(frames)
    flipped[-1] ^= 0xFF
    records, end = parse_frames(bytes(flipped))
    assert [r.key for r in records] == ["request:a"] and end == len(frame(Record("request:a", b'{"x":1}')))


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size + 3])
def test_torn_tail_is_truncated_on_recovery(tmp_path: Path, cut: int) -> None:
    store = SegmentStore(tmp_path)
    store.append([Record(f"request:{i}", b"x" * 50) for i in range(3)])
    store.close()
    seg = segment_paths(tmp_path)[-1]
    good_size = seg.stat().st_size
    with open(seg, "ab") as fh:  # a crash mid-write leaves part of a frame behind
        fh.write(frame(Record("request:torn", b"y" * 50))[:cut])
    store = SegmentStore(tmp_path)
    assert store.truncated_bytes == cut and seg.stat().st_size == good_size
    store.append([Record("request:after", b"z")])
    store.close()
    assert _keys(tmp_path) == ["request:0", "request:1", "request:2", "request:after"]


def test_dedupe_survives_restart(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path)
    assert store.append([Record("request:a", b"1"), Record("request:a", b"1")]).stored == 1
    store.close()
    store = SegmentStore(tmp_path)
    outcome = store.append([Record("request:a", b"1"), Record("response:a", b"2")])
    store.close()
    assert outcome.stored == 1 and outcome.duplicates == 1
    assert _keys(tmp_path) == ["request:a", "response:a"]


def test_dedupe_set_is_bounded(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path, StoreConfig(dedupe_ids=10))
    store.append([Record(f"request:{i}", b"x") for i in range(25)])
    assert len(store._recent) == 10 and store.contains("request:24") and not store.contains("request:0")
    store.close()
    store = SegmentStore(tmp_path, StoreConfig(dedupe_ids=10))
    assert len(store._recent) == 10 and store.contains("request:15")
    store.close()


def test_rotation_and_count_retention(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path, StoreConfig(segment_bytes=4096, max_segments=3))
    for i in range(40):
        store.append([Record(f"request:{i}", b"x" * 500)])
    store.close()
    segments = segment_paths(tmp_path)
    assert len(segments) == 3
    keys = _keys(tmp_path)
    assert keys[-1] == "request:39" and "request:0" not in keys
    assert keys == sorted(keys, key=lambda k: int(k.split(":")[1]))


def test_age_retention(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path, StoreConfig(segment_bytes=4096, max_age_seconds=3600))
    for i in range(20):
        store.append([Record(f"request:{i}", b"x" * 500)])
    store.close()
    first = segment_paths(tmp_path)[0]
    old = time.time() - 7200
    os.utime(first, (old, old))
    store = SegmentStore(tmp_path, StoreConfig(segment_bytes=4096, max_age_seconds=3600))
    store.close()
    assert first not in segment_paths(tmp_path) and segment_paths(tmp_path)


def test_concurrent_appends_group_commit(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path)
    fsyncs = {"n": 0}
    real = os.fdatasync

    def counting(fd: int) -> None:
        fsyncs["n"] += 1
        real(fd)

    os.fdatasync = counting  # type: ignore[assignment]
    try:
        threads = [
            threading.Thread(
                target=lambda t=t: [store.append([Record(f"request:{t}-{i}", b"x")]) for i in range(100)]
            )
            for t in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        os.fdatasync = real  # type: ignore[assignment]
        store.close()
    assert len(set(_keys(tmp_path))) == len(_keys(tmp_path)) == 800
    assert fsyncs["n"] < 800  # concurrent appends shared fsyncs


def test_second_writer_is_refused(tmp_path: Path) -> None:
    store = SegmentStore(tmp_path)
    try:
        with pytest.raises(StoreError, match="in use"):
            SegmentStore(tmp_path)
    finally:
        store.close()
