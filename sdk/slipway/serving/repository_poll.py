"""Triton's model control mode POLL: rescan the model repository every `--repository-poll-secs` and follow it.

A new model folder (one with a config.pbtxt) is loaded, a removed one unloaded, and a changed one (a file under
it added, removed or rewritten: config.pbtxt, a version folder, a model file, a sidecar) reloaded, through the
callbacks the server gives: the same load, swap and unload as the explicit API, so a reload fails no request
and a refused load leaves the served version serving. A change is seen by the folder's fingerprint (path, size
and modification time of everything under it; Triton compares modification times too), so a refused load is
retried only once the folder changes again (a half-copied version folder is retried when the copy ends).
Names starting with "." are skipped: folders hidden on their way in or out (see `experiment.hide_version_dir`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from slipway.core.errors import SlipwayError
from slipway.serving.triton_repository import list_models

log = logging.getLogger(__name__)
DEFAULT_POLL_SECS = 15.0  # Triton's --repository-poll-secs default

Fingerprint = tuple[tuple[str, int, int], ...]


def model_fingerprint(model_dir: Path) -> Fingerprint:
    """(relative path, size, mtime in ns) of every file and folder under `model_dir`, sorted; folders have size -1
    (an empty version folder counts: it changes which version is newest)."""
    entries: list[tuple[str, int, int]] = []
    for root, dirs, files in os.walk(model_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(root)
        for name in dirs:
            entries.append((str((base / name).relative_to(model_dir)), -1, 0))
        for name in files:
            if name.startswith("."):
                continue
            path = base / name
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed while scanning: the next poll sees the folder settled
                continue
            entries.append((str(path.relative_to(model_dir)), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def scan_repository(repo: str | Path) -> dict[str, Fingerprint]:
    """Every model folder of the repository (those with a config.pbtxt) and its fingerprint."""
    return {name: model_fingerprint(Path(repo) / name) for name in list_models(repo)}


class RepositoryPoller:
    """Applies the repository's changes since the last scan (or since `baseline`, the scan taken before the
    startup models were read) with `load(name)` and `unload(name)`; `frozen(name)` gives a reason to leave a
    model as it is (an A/B experiment splits it), or None."""

    def __init__(
        self,
        repo: str | Path,
        interval_s: float,
        baseline: Mapping[str, Fingerprint],
        *,
        load: Callable[[str], Awaitable[None]],
        unload: Callable[[str], Awaitable[None]],
        frozen: Callable[[str], str | None],
    ) -> None:
        self.repo = Path(repo)
        self.interval_s = interval_s
        self._seen = dict(baseline)
        self._load, self._unload, self._frozen = load, unload, frozen
        self._skipped: dict[str, Fingerprint | None] = {}  # a frozen model's change, logged once

    async def run(self) -> None:
        """Poll every `interval_s` until cancelled (the server's shutdown)."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.poll()

    async def poll(self) -> None:
        """One rescan; every change is applied concurrently (loads run in threads) and a failure is logged, never
        raised: the server keeps serving what it served."""
        try:
            current = await asyncio.to_thread(scan_repository, self.repo)
        except (OSError, SlipwayError) as err:
            log.warning("repository poll failed repo=%s reason=%s; models keep serving", self.repo, err)
            return
        changed = [
            name
            for name in sorted(set(current) | set(self._seen))
            if current.get(name) != self._seen.get(name)
        ]
        await asyncio.gather(*(self._apply(name, current.get(name)) for name in changed))

    async def _apply(self, name: str, fingerprint: Fingerprint | None) -> None:
        reason = self._frozen(name)
        if reason is not None:
            if self._skipped.get(name, ()) != fingerprint:
                self._skipped[name] = fingerprint
                log.warning("repository poll leaves model %s as it is: %s", name, reason)
            return
        action = "unload" if fingerprint is None else "load"
        try:
            await (self._unload(name) if fingerprint is None else self._load(name))
        except SlipwayError as err:  # the load path has logged the reason; the index shows it
            log.warning("repository poll: %s of model %s not applied: %s", action, name, err)
        except Exception:
            log.exception("repository poll: %s of model %s failed", action, name)
        if fingerprint is None:
            self._seen.pop(name, None)
        else:
            self._seen[name] = fingerprint
        self._skipped.pop(name, None)
