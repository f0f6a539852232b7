"""HTML report → PDF with headless Chromium's own printer (the browser kaleido already needs).

`--virtual-time-budget` lets the page's scripts (plotly drawing every figure) finish before printing;
the report's CSS sets A4 landscape pages and keeps figures whole.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from clipsvd.plots.export import ExportError, find_browser

PRINT_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw",
              "--virtual-time-budget=30000", "--window-size=1040,1400")


def html_to_pdf(html_path: str | Path, pdf_path: str | Path, timeout: float = 180) -> Path:
    """Print an HTML file to PDF; ExportError when no Chromium is found or printing fails."""
    browser = find_browser()
    if browser is None:
        raise ExportError("the PDF report needs Chromium (apt-get install chromium); the HTML report works without")
    html_path, pdf_path = Path(html_path).resolve(), Path(pdf_path).resolve()
    pdf_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="clipsvd-print-") as profile:
        command = [browser, *PRINT_ARGS, f"--user-data-dir={profile}", f"--print-to-pdf={pdf_path}",
                   html_path.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ExportError(f"Chromium did not print {html_path.name} within {timeout:.0f} s") from None
    if not pdf_path.is_file() or pdf_path.stat().st_size == 0:
        raise ExportError(f"Chromium could not print {html_path.name} (exit {done.returncode}): "
                          f"{done.stderr.strip()[-300:]}")
    return pdf_path


def html_bytes_to_pdf(html_text: str, timeout: float = 180) -> bytes:
    """PDF bytes of an HTML string (the dashboard's download), printed from a temporary file."""
    with tempfile.TemporaryDirectory(prefix="clipsvd-report-") as folder:
        source = Path(folder) / "report.html"
        source.write_text(html_text, encoding="utf-8")
        return html_to_pdf(source, Path(folder) / "report.pdf", timeout).read_bytes()
