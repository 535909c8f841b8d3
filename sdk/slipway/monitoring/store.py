"""Durable append-only segment store for captured inference events.

Every record is framed as `magic | payload length | key length | crc32(key + payload) | key | payload`, so a
record torn by a crash is detected on recovery and cut off. A single writer thread batches all appends that
arrive while it is busy into one write + fsync (group commit); callers are acknowledged only after that fsync.
Keys (`<kind>:<event id>`) of recent records are kept in a bounded set, rebuilt from the newest segments on
recovery, so a retried event is stored once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from slipway.core.errors import DataError, OverloadedError, StoreError

logger = logging.getLogger(__name__)

MAGIC = b"SWR1"
HEADER = struct.Struct("<4sIHI")  # magic, payload length, key length, crc32 of key + payload
SEGMENT_RE = re.compile(r"^seg-(\d{12})\.log$")
MAX_KEY_BYTES = 1024
MAX_RECORD_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class StoreConfig:
    """Sizes and limits of the segment store; all bounded so memory and disk stay bounded."""

    segment_bytes: int = 64 * 1024 * 1024
    max_segments: int = 32
    max_age_seconds: float | None = 7 * 24 * 3600.0
    dedupe_ids: int = 200_000
    max_pending_records: int = 20_000
    fsync: bool = True


class Record(NamedTuple):
    """One record to append: `key` identifies it for dedupe, `payload` is opaque bytes (JSON here)."""

    key: str
    payload: bytes


class AppendOutcome(NamedTuple):
    """How many records were written now and how many were already stored (retries)."""

    stored: int
    duplicates: int


def frame(record: Record) -> bytes:
    """Encode one record with its length and checksum header."""
    key = record.key.encode()
    if not key or len(key) > MAX_KEY_BYTES:
        raise DataError(f"record key must be 1..{MAX_KEY_BYTES} bytes, got {len(key)}")
    crc = zlib.crc32(record.payload, zlib.crc32(key))
    return HEADER.pack(MAGIC, len(record.payload), len(key), crc) + key + record.payload


def parse_frames(data: bytes | memoryview) -> tuple[list[Record], int]:
    """Decode consecutive frames; return the records and the offset where the valid prefix ends."""
    records: list[Record] = []
    view = memoryview(data)
    offset, size = 0, len(view)
    while offset + HEADER.size <= size:
        magic, plen, klen, crc = HEADER.unpack_from(view, offset)
        start = offset + HEADER.size
        end = start + klen + plen
        if magic != MAGIC or klen == 0 or klen > MAX_KEY_BYTES or plen > MAX_RECORD_BYTES or end > size:
            break
        key = bytes(view[start : start + klen])
        payload = bytes(view[start + klen : end])
        if zlib.crc32(payload, zlib.crc32(key)) != crc:
            break
        try:
            records.append(Record(key.decode(), payload))
        except UnicodeDecodeError:
            break
        offset = end
    return records, offset


def segment_paths(data_dir: Path) -> list[Path]:
    """Segments of a data directory, oldest first."""
    seg_dir = data_dir / "segments"
    if not seg_dir.is_dir():
        return []
    return sorted(p for p in seg_dir.iterdir() if SEGMENT_RE.match(p.name))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Pending:
    __slots__ = ("frames", "future", "records")

    def __init__(self, records: list[Record], frames: list[bytes]) -> None:
        self.records = records
        self.frames = frames
        self.future: concurrent.futures.Future[int] = concurrent.futures.Future()


class SegmentStore:
    """The single writer of a data directory: append with group commit, recover, rotate, retain, read back."""

    def __init__(self, data_dir: Path, config: StoreConfig | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.config = config or StoreConfig()
        self.seg_dir = self.data_dir / "segments"
        self.seg_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            raise StoreError(f"{self.data_dir} is in use by another monitor process (lock held)") from exc
        self._cv = threading.Condition()
        self._queue: list[_Pending] = []
        self._queued_records = 0
        self._pending: dict[str, concurrent.futures.Future[int]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._closing = False
        self.records_written = 0
        self.rows_hint = 0
        self.truncated_bytes = 0
        self._recover()
        self._writer = threading.Thread(target=self._run, name="slipway-store-writer", daemon=True)
        self._writer.start()

    # ----------------------------------------------------------------------------------------- recovery
    def _recover(self) -> None:
        """Cut a torn tail off the newest segment, open it for appends, rebuild the recent-key set."""
        segments = segment_paths(self.data_dir)
        if segments:
            active = segments[-1]
            data = active.read_bytes()
            _, valid = parse_frames(data)
            if valid < len(data):
                self.truncated_bytes = len(data) - valid
                logger.warning(
                    "store recovery: torn or corrupt tail truncated",
                    extra={
                        "segment": active.name,
                        "kept_bytes": valid,
                        "dropped_bytes": self.truncated_bytes,
                    },
                )
                with open(active, "r+b") as fh:
                    fh.truncate(valid)
                    fh.flush()
                    os.fsync(fh.fileno())
            self._active_seq = int(SEGMENT_RE.match(active.name).group(1))  # type: ignore[union-attr]
        else:
            self._active_seq = 1
        self._open_active()
        keys: list[str] = []
        for seg in reversed(segment_paths(self.data_dir)):
            recs, _ = parse_frames(seg.read_bytes())
            keys[:0] = [r.key for r in recs]
            if len(keys) >= self.config.dedupe_ids:
                break
        for key in keys[-self.config.dedupe_ids :]:
            self._recent[key] = None
        self._apply_retention()
        logger.info(
            "store opened",
            extra={
                "data_dir": str(self.data_dir),
                "segments": len(segment_paths(self.data_dir)),
                "recent_keys": len(self._recent),
                "truncated_bytes": self.truncated_bytes,
            },
        )

    def _active_path(self) -> Path:
        return self.seg_dir / f"seg-{self._active_seq:012d}.log"

    def _open_active(self) -> None:
        path = self._active_path()
        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._active_size = os.fstat(self._fd).st_size
        if created and self.config.fsync:
            _fsync_dir(self.seg_dir)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._active_seq += 1
        self._open_active()
        self._apply_retention()

    def _apply_retention(self) -> None:
        """Delete the oldest closed segments beyond the count limit or older than the age limit."""
        closed = [p for p in segment_paths(self.data_dir) if p != self._active_path()]
        excess = max(0, len(closed) + 1 - self.config.max_segments)
        now = time.time()
        for i, seg in enumerate(closed):
            too_old = False
            if self.config.max_age_seconds is not None:
                with contextlib.suppress(FileNotFoundError):
                    too_old = now - seg.stat().st_mtime > self.config.max_age_seconds
            if i < excess or too_old:
                with contextlib.suppress(FileNotFoundError):
                    seg.unlink()
                logger.info("store retention: segment deleted", extra={"segment": seg.name})

    # ------------------------------------------------------------------------------------------ appends
    def submit(self, records: Sequence[Record]) -> concurrent.futures.Future[AppendOutcome]:
        """Queue records for the next group commit; the future resolves once they are fsynced."""
        own: list[Record] = []
        waits: list[concurrent.futures.Future[int]] = []
        duplicates = 0
        frames = [frame(r) for r in records]
        with self._cv:
            if self._closing:
                raise StoreError("the store is closing")
            if self._queued_records + len(records) > self.config.max_pending_records:
                raise OverloadedError("monitor write queue is full; retry later")
            own_frames: list[bytes] = []
            seen: set[str] = set()
            for rec, fr in zip(records, frames, strict=True):
                if rec.key in self._recent or rec.key in seen:
                    duplicates += 1
                elif rec.key in self._pending:
                    duplicates += 1
                    waits.append(self._pending[rec.key])
                else:
                    own.append(rec)
                    own_frames.append(fr)
                seen.add(rec.key)
            pending = _Pending(own, own_frames)
            if own:
                for rec in own:
                    self._pending[rec.key] = pending.future
                self._queue.append(pending)
                self._queued_records += len(own)
                self._cv.notify()
        result: concurrent.futures.Future[AppendOutcome] = concurrent.futures.Future()
        deps = ([pending.future] if own else []) + waits
        outcome = AppendOutcome(len(own), duplicates)
        if not deps:
            result.set_result(outcome)
            return result
        remaining = [len(deps)]
        lock = threading.Lock()

        def _done(fut: concurrent.futures.Future[int]) -> None:
            exc = fut.exception()
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
                if result.done():
                    return
                if exc is not None:
                    result.set_exception(exc)
                elif last:
                    result.set_result(outcome)

        for dep in deps:
            dep.add_done_callback(_done)
        return result

    def append(self, records: Sequence[Record], timeout: float | None = 30.0) -> AppendOutcome:
        """Append records and block until they are durable (fsynced); retried keys are not stored again."""
        return self.submit(records).result(timeout=timeout)

    async def append_async(self, records: Sequence[Record]) -> AppendOutcome:
        """Like `append`, awaiting the group commit without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(records))

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue and self._closing:
                    return
                batch, self._queue = self._queue, []
                self._queued_records = 0
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            buf = b"".join(fr for item in batch for fr in item.frames)
            view = memoryview(buf)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.config.fsync:
                os.fdatasync(self._fd)
            self._active_size += len(buf)
            error: BaseException | None = None
        except OSError as exc:
            logger.error("store write failed", extra={"error": str(exc)})
            error = StoreError(f"monitor could not persist events: {exc}")
        with self._cv:
            for item in batch:
                for rec in item.records:
                    self._pending.pop(rec.key, None)
                    if error is None:
                        self._recent[rec.key] = None
                if error is None:
                    self.records_written += len(item.records)
            while len(self._recent) > self.config.dedupe_ids:
                self._recent.popitem(last=False)
        for item in batch:
            if error is None:
                item.future.set_result(len(item.records))
            else:
                item.future.set_exception(error)
        if error is None and self._active_size >= self.config.segment_bytes:
            try:
                self._rotate()
            except OSError as exc:
                logger.error("store rotation failed", extra={"error": str(exc)})

    # ------------------------------------------------------------------------------------------- reading
    def iter_newest_first(self) -> Iterator[Record]:
        """Yield durable records, newest first (one segment in memory at a time)."""
        yield from iter_records_newest_first(self.data_dir)

    def contains(self, key: str) -> bool:
        """Whether a key is in the recent (dedupe) set."""
        with self._cv:
            return key in self._recent

    def close(self) -> None:
        """Flush queued appends, stop the writer, release the lock."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._writer.join(timeout=30)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)


def iter_records_newest_first(data_dir: Path) -> Iterator[Record]:
    """Read the records of a data directory without writing to it (safe beside a running monitor).

    A torn tail is ignored here, not truncated: only the writer repairs files.
    """
    for seg in reversed(segment_paths(Path(data_dir))):
        try:
            data = seg.read_bytes()
        except FileNotFoundError:  # deleted by retention while we were reading
            continue
        records, _ = parse_frames(data)
        yield from reversed(records)
