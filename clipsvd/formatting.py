"""Numbers, sizes and file names as text, the same in the dashboard, the CLI and the report; no Streamlit here."""
from __future__ import annotations

import math
from typing import Any, Iterable

DIGITS = 3  # decimals of a score (change, shift, share) in tables, the report and the paper table


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number_text(value: float | None, digits: int = DIGITS, grouping: bool = False) -> str:
    """A score with `digits` decimals, or `digits` significant digits when it is non-zero but smaller than
    10^-digits (3e-10 stays "3e-10", not "0.000" or a run of zeros); "—" when absent."""
    if _missing(value):
        return "—"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.{digits}g}"
    return f"{value:,.{digits}f}" if grouping else f"{value:.{digits}f}"


def column_number_format(values: Iterable[float], digits: int = DIGITS) -> str:
    """The printf format of a table column (Streamlit's NumberColumn) that follows `number_text`'s rule as far
    one format per column can: fixed decimals, or significant digits when a non-zero value is below 10^-digits
    (Streamlit's own default prints such a value as a run of zeros that a narrow column clips)."""
    tiny = any(not _missing(v) and v != 0 and abs(v) < 10 ** -digits for v in values)
    return f"%.{digits}g" if tiny else f"%.{digits}f"


def percent(value: float | None) -> str:
    """A score already in percent, two decimals; "—" when absent."""
    return "—" if _missing(value) else f"{value:.2f}%"


def fraction_as_percent(value: float | None) -> float | None:
    """A score stored as a fraction (0..1, e.g. a run's per-epoch train accuracy) in percent, the unit every other
    accuracy is shown in; stored data stays as it is, only what is shown converts."""
    return None if _missing(value) else 100.0 * value


def test_images_text(n: int | None, total: int | None) -> str:
    """The test images a score was measured on, "n of N" ("160 of 800"); "n of ?" when the split size was not
    recorded (runs saved before it was); "—" when nothing was evaluated."""
    if _missing(n):
        return "—"
    return f"{int(n):,} of {'?' if _missing(total) else f'{int(total):,}'}"


def fraction_text(value: float | None) -> str | None:
    """A share of the model's parameters (0..1) as a percentage with enough digits for PEFT's tiny shares."""
    return None if _missing(value) else f"{value:.4%} of the model"


def seconds_text(value: float | None) -> str:
    """A duration in the unit a person reads best (s below two minutes, min below two hours, else h): a step's
    time, a run's, a grid's estimate or ETA."""
    if _missing(value):
        return "—"
    return (f"{value:.2f} s" if value < 10 else f"{value:.0f} s" if value < 120 else
            f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h")


def bytes_text(value: float | None) -> str:
    """A file size in B, KiB, MiB or GiB."""
    if _missing(value):
        return "—"
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def shots_label(k: int | None) -> str:
    return "all images" if k is None else f"{k}-shot"


def config_title(method: str, dataset: str, shots: int | None, seed: int) -> str:
    """A run or config in one line, the same in the CLI, the job list, a grid's progress and the run picker:
    "clip-svd · world-shape-microscopy · 16-shot · seed 1"."""
    return f"{method} · {dataset} · {shots_label(shots)} · seed {seed}"


def file_stem(*parts: Any) -> str:
    """A file name from run ids and settings, safe on every OS (empty parts are skipped)."""
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:120] or "figure"
