"""Files the package reads at run time, found through the installed package (importlib.resources).

`clipsvd/package_data/` links to the clone's top-level `corpus/`, `app.py`, `pages/` and `.streamlit/`, so an
editable install reads the clone's files and a wheel carries copies of them: the design keeps its top-level
folders and `pip install clipsvd` works without the clone. Files the package writes for later runs (SVD factors,
TextSpan's contributions and text embeddings, numba's compiled kernels) live in the user cache (`cache_dir`).
"""
from __future__ import annotations

import functools
import importlib.util
import ipaddress
import os
import socket
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from clipsvd.errors import ClipsvdError

CACHE_ENV = "CLIPSVD_CACHE"
# What each optional part needs, and the extra of pyproject.toml that installs it.
EXTRAS = {"transformers": "biomed", "ray": "sweep", "playwright": "test", "peft": "peft"}


def cache_dir(kind: str) -> Path:
    """The project's cache folder for one kind of file: $CLIPSVD_CACHE/<kind> or ~/.cache/clipsvd/<kind>."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "clipsvd") / kind


def package_data() -> Path:
    return Path(str(resources.files("clipsvd") / "package_data"))


def corpus_dir() -> Path:
    """The built-in corpora (general, biomedical, world)."""
    return package_data() / "corpus"


def dashboard_script() -> Path:
    """The Streamlit app's main script; its pages/ folder lies beside it."""
    return package_data() / "app.py"


def streamlit_flags(overrides: dict[str, Any] | None = None) -> list[str]:
    """The dashboard's .streamlit/config.toml as `streamlit run` flags, so an installed app looks the same from any
    working directory (Streamlit reads config.toml only from the working directory and ~/.streamlit).

    `overrides` ("section.key" -> value) replace the file's values, so each option is given once.
    """
    config = tomllib.loads((package_data() / "streamlit" / "config.toml").read_text())
    options = {f"{section}.{key}": value for section, values in config.items() for key, value in values.items()}
    options.update(overrides or {})
    return [f"--{name}={_flag_value(value)}" for name, value in options.items()]


def _flag_value(value: Any) -> str:
    """A TOML value as Streamlit's command line spells it (true/false, not Python's True/False)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def require(module: str, purpose: str, error: type[ClipsvdError] = ClipsvdError) -> None:
    """Raise `error` naming the extra to install when an optional dependency is missing."""
    if importlib.util.find_spec(module) is None:
        raise error(f"{purpose} needs the '{module}' package, which is optional: pip install 'clipsvd[{EXTRAS[module]}]' "
                    "(or `make install` in the clone)")


# The dashboard's access settings, read by the server (clipsvd.app.access) and set by `clipsvd dashboard`, which
# must not import the Streamlit app to know them.
TOKEN_ENV = "CLIPSVD_DASHBOARD_TOKEN"
ALLOW_ENV = "CLIPSVD_ALLOW_PATHS"  # os.pathsep-separated folders; unset: the defaults of allowed_roots()


@functools.lru_cache(maxsize=8)  # a name lookup per page run otherwise
def is_loopback(address: str | None) -> bool:
    """True when every address `address` resolves to is a loopback one; an empty address means every interface
    (Streamlit's own default, used when no config file is read)."""
    if not address:
        return False
    try:
        infos = socket.getaddrinfo(address, None)
    except (socket.gaierror, UnicodeError):
        return False
    try:
        return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)
    except ValueError:
        return False
