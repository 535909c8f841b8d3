"""Steps of the recurring drift pipeline: export the captured window, detect drift (retrain: steps.retrain)."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from slipway.core.config import SlipwayConfig
from slipway.core.errors import DataError

log = logging.getLogger(__name__)
ATTACHMENT_RE = re.compile(r'filename="([A-Za-z0-9._-]+)"')


def fetch(url: str, directory: Path, default_name: str, timeout: float = 300.0) -> Path:
    """GET `url` into `directory`, named as the server's content-disposition says (else `default_name`).

    An HTTP error or an unreachable monitor is a DataError naming the URL."""
    import httpx

    try:
        with httpx.stream("GET", url, timeout=timeout) as resp:
            if resp.status_code != 200:
                detail = resp.read()[:500].decode(errors="replace")
                raise DataError(f"GET {url}: HTTP {resp.status_code}: {detail}")
            match = ATTACHMENT_RE.search(resp.headers.get("content-disposition", ""))
            path = directory / (match.group(1) if match else default_name)
            with path.open("wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        raise DataError(f"GET {url}: {exc} (is monitor.url right and the monitor reachable?)") from exc
    return path


def export_captured_window(cfg: SlipwayConfig, window_path: Path) -> Path:
    """Write the window as NPZ at exactly `window_path` (KFP output paths carry no extension).

    With `monitor.url` it comes from the running monitor over HTTP (no volume shared with it), else from
    the capture store at `monitor.data_dir`."""
    from slipway.monitoring.window import export_window

    if cfg.monitor.url:
        with tempfile.TemporaryDirectory(prefix=".window-", dir=window_path.parent) as tmp:  # same filesystem
            url = f"{cfg.monitor.url.rstrip('/')}/v1/window?size={cfg.monitor.window_size}"
            os.replace(fetch(url, Path(tmp), "window.npz"), window_path)
        return window_path
    written = export_window(
        cfg.monitor.data_dir, window_path.with_name(window_path.name + ".npz"), cfg.monitor.window_size
    )
    os.replace(written, window_path)
    return window_path


def check_window(cfg: SlipwayConfig, window_path: Path, report_dir: Path):
    """Evidently drift of the window against the training-time reference; the report lands in report_dir."""
    from slipway.monitoring.drift import DriftConfig, detect_drift

    drift = DriftConfig.from_rule(cfg.monitor)
    if not cfg.monitor.url:
        return detect_drift(cfg.monitor.reference, window_path, report_dir, drift)
    with tempfile.TemporaryDirectory(prefix="slipway-reference-") as tmp:
        reference = fetch(f"{cfg.monitor.url.rstrip('/')}/v1/reference", Path(tmp), "reference.npz")
        return detect_drift(reference, window_path, report_dir, drift)
