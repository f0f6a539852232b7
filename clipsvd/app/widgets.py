"""Form widgets and download buttons the pages share: hyperparameter forms, error boxes, exports."""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Callable

import pandas as pd
import streamlit as st

from clipsvd.app.text import md
from clipsvd.choices import field_choices, field_helps
from clipsvd.errors import ClipsvdError
from clipsvd.methods import get_method
from clipsvd.methods.presets import Setting
from clipsvd.plots.export import FORMATS, MIME_TYPES, export_figure, export_table


def try_call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a clipsvd function; show its ClipsvdError as a red box (its message is user-facing) and return None."""
    try:
        return function(*args, **kwargs)
    except ClipsvdError as exc:
        st.error(md(exc), icon=":material/error:")  # messages name user paths, datasets and classes
        return None


def computed_once(name: str, params: dict[str, Any], button_label: str) -> bool:
    """Heavy analyses run on a button press and stay shown while their settings are unchanged."""
    if st.button(button_label, type="primary", key=f"run-{name}"):
        st.session_state[f"params-{name}"] = params
    done = st.session_state.get(f"params-{name}") == params
    if not done and st.session_state.get(f"params-{name}") is not None:
        st.caption(f"Settings changed: press **{button_label}** to recompute.")
    return done


# ----- hyperparameter forms ------------------------------------------------------------------------
def hyperparameter_form(method: str, setting: Setting, key: str) -> dict[str, Any]:
    """Widgets for every field of the method's Config, preset to the official protocol for this setting
    (protocol, dataset, backbone, K), each with its help; returns only the values the user changed."""
    cls = get_method(method)
    defaults = cls.default_config(setting)
    hints = typing.get_type_hints(cls.Config)
    helps, choices = field_helps(cls.Config), field_choices(cls.Config)
    preset = cls.preset(setting)
    overrides: dict[str, Any] = {}
    columns = st.columns(3)
    shown = 0
    for f in dataclasses.fields(cls.Config):
        default = getattr(defaults, f.name)
        if not dataclasses.replace(defaults, **overrides).field_used(f.name):
            continue  # e.g. momentum under AdamW: the form shows what the chosen settings use
        source = preset.sources.get(f.name)
        help_text = helps.get(f.name, "") + (f"\n\nOfficial value, from {source}" if source else "")
        widget_key = f"{key}-{setting.protocol}-{setting.shots}-{setting.dataset}-{setting.backbone}-{f.name}"
        with columns[shown % 3]:
            value = field_widget(f.name, hints.get(f.name, type(default)), default, widget_key, help_text,
                                 choices.get(f.name))
        shown += 1
        if value != default:
            overrides[f.name] = value
    return overrides


def field_widget(name: str, hint: Any, default: Any, key: str, help_text: str = "",
                 choices: tuple[str, ...] | None = None) -> Any:
    """The widget of one config field: a select box over the field's own choice list where it has one, else by
    the type of its value."""
    label = name.replace("_", " ")
    args = typing.get_args(hint)
    optional = type(None) in args
    help_text = help_text or None
    if choices and isinstance(default, list):
        return st.pills(label, choices, selection_mode="multi", default=default, key=key, help=help_text)
    if choices:
        return st.selectbox(label, choices, index=choices.index(default), key=key, help=help_text)
    if isinstance(default, bool):
        return st.checkbox(label, value=default, key=key, help=help_text)
    if isinstance(default, int) or (default is None and int in args):
        if optional:
            text = st.text_input(label, value="" if default is None else str(default), key=key,
                                 help=(help_text or "") + " (empty: not set)")
            try:
                return int(text) if text.strip() else None
            except ValueError:
                st.error(f"{label}: expected a whole number or nothing, got '{text}'")
                return default
        return int(st.number_input(label, value=default, step=1, key=key, help=help_text))
    if isinstance(default, float):
        step = 10.0 ** math.floor(math.log10(abs(default))) if default else 0.01
        return float(st.number_input(label, value=default, step=step, format="%g", key=key, help=help_text))
    if isinstance(default, str):
        return st.text_input(label, value=default, key=key, help=help_text)
    if name == "templates":
        text = st.text_area(label, value="\n".join(default), key=key, help=(help_text or "") + " One per line.")
        return [line.strip() for line in text.splitlines() if line.strip()]
    text = st.text_input(label, value=", ".join(map(str, default or [])), key=key,
                         help=(help_text or "") + (" (comma-separated; empty: all)" if optional else " (comma-separated)"))
    items = [t.strip() for t in text.split(",") if t.strip()]
    is_int = any(typing.get_args(a) == (int,) for a in args) or typing.get_args(hint) == (int,)
    try:
        values = [int(t) for t in items] if is_int else items
    except ValueError:
        st.error(f"{label}: expected whole numbers, got '{text}'")
        values = []
    return values if values or not optional else None


# ----- exports ---------------------------------------------------------------------------------------
def figure_downloads(fig: Any, name: str, key: str | None = None) -> None:
    """PNG/SVG/PDF/HTML buttons for a figure. Bytes are made on click (kaleido needs ~2 s the first time)."""
    row = st.container(horizontal=True, gap="small")
    for fmt in FORMATS:
        row.download_button(fmt.upper(), data=_deferred(export_figure, fig, fmt), file_name=f"{name}.{fmt}",
                            mime=MIME_TYPES[fmt], key=f"dl-{key or name}-{fmt}", on_click="ignore",
                            icon=":material/download:", help=f"Download this figure as {fmt.upper()}")


def table_download(df: pd.DataFrame, name: str, key: str | None = None, label: str = "CSV") -> None:
    """A CSV button for a table, via the same export module as the figures."""
    st.download_button(label, data=_deferred(export_table, df), file_name=f"{name}.csv", mime="text/csv",
                       key=f"dl-{key or name}-csv", on_click="ignore", icon=":material/download:",
                       help="Download this table as CSV")


def _deferred(function: Callable[..., bytes], *args: Any) -> Callable[[], bytes]:
    return lambda: function(*args)
