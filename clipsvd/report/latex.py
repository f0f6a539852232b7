"""Tables as LaTeX (booktabs) to paste into a paper: escaped text, one tabular, numbers rounded."""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Mapping, Sequence

import pandas as pd

from clipsvd.analysis.explanation_shift import SUMMARY_TEXTS
from clipsvd.errors import ConfigError
from clipsvd.formatting import number_text
from clipsvd.plots.style import head_label
from clipsvd.runs.aggregate import run_transfer_table

if TYPE_CHECKING:
    from clipsvd.runs import Run

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
            ">": r"\textgreater{}", "|": r"\textbar{}"}
_PATTERN = re.compile("|".join(re.escape(c) for c in _SPECIAL))
# What pdflatex's default fonts lack and the tables can contain (measure names, head labels).
_UNICODE = {"·": r"$\cdot$", "σ": r"$\sigma$", "ρ": r"$\rho$", "…": r"\dots{}", "—": "---", "–": "--",
            "ᵀ": r"$^\top$", "−": "-", "×": r"$\times$", "→": r"$\to$"}


def latex_escape(text: object) -> str:
    """Text safe inside a LaTeX table cell: the ten special characters, < > |, and a few Unicode signs."""
    escaped = _PATTERN.sub(lambda m: _SPECIAL[m.group(0)], str(text))
    for char, replacement in _UNICODE.items():
        escaped = escaped.replace(char, replacement)
    return escaped


def _cell(value: object, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--"
    if isinstance(value, float):
        return number_text(value, digits)
    return latex_escape(value)


def latex_table(table: pd.DataFrame, columns: Mapping[str, str], align: Sequence[str], caption: str = "",
                label: str = "", digits: int = 3) -> str:
    """A booktabs `table` of `columns` (column -> header, in order) with one alignment spec per column.

    Headers and cells are escaped; floats get `digits` decimals; the caption is escaped too, the label kept
    as given (only letters, digits and :-_. allowed).
    """
    if len(align) != len(columns):
        raise ConfigError(f"latex table: {len(columns)} columns but {len(align)} alignments")
    missing = [c for c in columns if c not in table]
    if missing:
        raise ConfigError(f"latex table: the table has no columns {missing}")
    if label and not re.fullmatch(r"[A-Za-z0-9:._-]+", label):
        raise ConfigError(f"latex table: label '{label}' may only use letters, digits and : . _ -")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "".join(align) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in columns.values()) + r" \\", r"\midrule"]
    for _, row in table.iterrows():
        lines.append(" & ".join(_cell(row[c], digits) for c in columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def explanation_latex(table: pd.DataFrame, measure: str = "ov_change", caption: str | None = None,
                      label: str = "tab:explanation-shift") -> str:
    """The explanation-shift table of `explanation_shifts` as the paper table: rank, head, weight change,
    both shifts, variance explained by the top-k texts before/after, first texts before and after."""
    k = int(table["k"].iloc[0]) if len(table) and "k" in table else None
    frame = table.assign(head_name=[head_label(l, h) for l, h in zip(table["layer"], table["head"])],
                         **{c: table[c].str.replace(" | ", "; ", regex=False) for c in ("texts_before", "texts_after")})
    columns: dict[str, str] = {}
    align: list[str] = []
    if "rank" in frame and measure in frame:
        columns.update({"rank": "rank", "head_name": "head", measure: measure})
        align += ["r", "l", "r"]
    else:
        columns["head_name"] = "head"
        align.append("l")
    columns.update({"text_shift": "text shift", "span_shift": "span shift",
                    "explained_before": "expl. before", "explained_after": "expl. after",
                    "texts_before": f"top-{SUMMARY_TEXTS} texts before", "texts_after": f"top-{SUMMARY_TEXTS} texts after"})
    align += ["r", "r", "r", "r", "p{4.2cm}", "p{4.2cm}"]
    caption = caption or (f"Per-head weight change ({measure}) and explanation shift of the first {k} TextSpan "
                          "texts: text shift = share of texts replaced, span shift = mean squared sine of the "
                          "principal angles between the before and after text spans; expl. = share of the head's "
                          "variance those texts explain.")
    return latex_table(frame, columns, align, caption, label)


def transfer_latex(run: Run, label: str = "tab:transfer") -> str:
    """A cross-dataset / domain-generalization run's source, targets and target average (`run_transfer_table`) as
    the papers' transfer table; ConfigError for a run with no targets (there is no such table to write)."""
    table = run_transfer_table(run)
    if table.empty:
        raise ConfigError(f"run {run.run_id}: protocol {run.config.get('protocol')!r} has no targets; the transfer "
                          "table is for cross-dataset and domain-generalization runs")
    caption = (f"{run.config.get('protocol')}: {run.config.get('method')} trained on {table['dataset'].iloc[0]} "
               "and scored unchanged on each target; accuracy in %, the target average is the unweighted mean over "
               "the targets (-- where a target has no score).")
    return latex_table(table, {"dataset": "dataset", "role": "role", "accuracy": "accuracy (%)",
                               "test_images": "test images"}, ["l", "l", "r", "r"], caption, label, digits=2)
