"""Figures to PNG/SVG/PDF (kaleido + Chromium) or self-contained HTML, tables to CSV.

kaleido 1.x renders in a headless Chromium. Starting one per export costs ~2 s; a kaleido sync
server kept for the whole process brings that to ~0.2 s, so it is started on the first export.
"""
from __future__ import annotations

import shutil
import threading
import warnings

import pandas as pd
import plotly.graph_objects as go

from clipsvd.choices import FIGURE_FORMATS, IMAGE_FORMATS
from clipsvd.errors import ClipsvdError

FORMATS = FIGURE_FORMATS
MIME_TYPES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "html": "text/html",
              "csv": "text/csv"}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
_server_lock = threading.Lock()
_server_started = False


class ExportError(ClipsvdError, RuntimeError):
    """A figure could not be rendered to a static image (no browser, unknown format)."""


def find_browser() -> str | None:
    """Path of a Chromium-family browser kaleido can drive, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _ensure_server() -> None:
    global _server_started
    with _server_lock:
        if _server_started:
            return
        import kaleido

        if hasattr(kaleido, "start_sync_server"):
            kaleido.start_sync_server(silence_warnings=True)
        _server_started = True


def export_figure(fig: go.Figure, fmt: str, width: int | None = None, height: int | None = None,
                  scale: float = 2.0) -> bytes:
    """The figure as png/svg/pdf bytes, or as an HTML page that embeds plotly.js (works offline)."""
    fmt = fmt.lower()
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode("utf-8")
    if fmt not in IMAGE_FORMATS:
        raise ExportError(f"export format '{fmt}' is not supported; choose one of {', '.join(FORMATS)}")
    if find_browser() is None:
        raise ExportError("static image export needs Chromium (apt-get install chromium); HTML export works without")
    _ensure_server()
    width = width or fig.layout.width or 1000
    height = height or fig.layout.height or 600
    with warnings.catch_warnings():
        # plotly passes kaleido options that a running server ignores; nothing to act on.
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        try:
            return fig.to_image(format=fmt, width=width, height=height, scale=scale if fmt == "png" else 1)
        except Exception as exc:
            raise ExportError(f"could not render the figure as {fmt}: {exc}") from exc


def export_table(table: pd.DataFrame) -> bytes:
    """A table as UTF-8 CSV (no index column)."""
    return table.to_csv(index=False).encode("utf-8")
