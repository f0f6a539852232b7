"""Scores combined across runs: the base/novel harmonic mean and both ways the papers average it.

Plain numbers in, plain numbers out (no torch): the run tables, `reproduce` and the training code share them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def harmonic_mean(base: float | None, novel: float | None) -> float | None:
    """The base→novel HM of two accuracies; None when either is missing (a method that cannot do novel classes)."""
    if base is None or novel is None:
        return None
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


def target_average(accuracies: Sequence[float | None]) -> float | None:
    """The transfer protocols' average over targets (CoOp/CoCoOp's Tables 2 and 3); None when any target is
    missing (a method that cannot score new classes) or there are none."""
    if not accuracies or any(a is None for a in accuracies):
        return None
    return float(np.mean(accuracies))


def hm_summary(rows: Sequence[dict]) -> dict:
    """Both conventions the papers use: HM of the averaged base/novel, and the average of per-row HMs."""
    pairs = [(r["base"], r["novel"]) for r in rows if r.get("base") is not None and r.get("novel") is not None]
    if not pairs:
        return {"base": None, "novel": None, "hm_of_averages": None, "average_of_hms": None}
    base = float(np.mean([b for b, _ in pairs]))
    novel = float(np.mean([n for _, n in pairs]))
    return {
        "base": base,
        "novel": novel,
        "hm_of_averages": harmonic_mean(base, novel),
        "average_of_hms": float(np.mean([harmonic_mean(b, n) for b, n in pairs])),
    }


__all__ = ["harmonic_mean", "hm_summary", "target_average"]
