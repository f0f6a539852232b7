"""Who may use the dashboard and which server paths a browser may name, as Jupyter Server does it.

On this machine only (the default: the server listens on the loopback address) anyone who reaches the port is
the server's own user, so nothing is asked. Served beyond localhost (`clipsvd dashboard --address 0.0.0.0`), a
token is required: `clipsvd dashboard` generates one (or takes `--token` / $CLIPSVD_DASHBOARD_TOKEN) and hands it
to the server in the environment (never on a command line, which other users can read with `ps`). A browser
session shows it once as `?token=…`; the gate then keeps an HMAC of it in a cookie for this port, so reloads and
new tabs of the same browser need no token, and drops the token from the URL, so a copied link does not carry it.
Paths a browser can type or put in a URL (data roots, weights files, run stores, data roots of Reproduce) are then
confined to allowed roots; anything else is refused by name before it is opened or listed.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from pathlib import Path
from typing import Iterable

from clipsvd.errors import ClipsvdError
from clipsvd.resources import ALLOW_ENV, TOKEN_ENV, is_loopback
from clipsvd.runs import default_runs_root

START_DIR = Path.cwd().resolve()  # the folder the server started in (read when the app first imports this)
AUTH_KEY = "_clipsvd_authenticated"
COOKIE_SALT = b"clipsvd-dashboard-cookie"
GATE_MESSAGE = "This dashboard needs its token: open the link printed where it was started (…/?token=…)."
NO_TOKEN_MESSAGE = ("This dashboard is served beyond localhost without a token, so it shows nothing: start it with "
                    "`clipsvd dashboard --address …`, which prints a link with a token, or set "
                    f"${TOKEN_ENV} before `streamlit run`.")


_LOGGER = logging.getLogger(__name__)
# Session ids that passed the gate in this server process: Streamlit's upload endpoint stores a file only for them.
_AUTHENTICATED: set[str] = set()
_GUARD_LOCK = threading.Lock()
GUARDED_FLAG = "_clipsvd_uploads_guarded"


class AccessError(ClipsvdError, PermissionError):
    """A path outside the roots this dashboard serves, or a request without the dashboard's token."""


# ----- where the server listens --------------------------------------------------------------------------------
def served_beyond_localhost() -> bool:
    """Whether this Streamlit server listens on more than the loopback address."""
    import streamlit as st

    return not is_loopback(st.get_option("server.address"))


def configured_token() -> str | None:
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def cookie_value(token: str) -> str:
    """What the cookie holds: an HMAC of the token, so the cookie store never holds the token itself."""
    return hmac.new(token.encode(), COOKIE_SALT, hashlib.sha256).hexdigest()


def cookie_name(port: int | str | None) -> str:
    """One cookie per port: cookies ignore ports, and two dashboards on one host have two tokens."""
    return f"clipsvd_auth_{port or 'default'}"


# ----- the gate --------------------------------------------------------------------------------------------------
def gate() -> None:
    """Called first by every page (clipsvd.app.frame.page_header): a session served beyond localhost without a
    valid token sees one line and nothing else runs (st.stop); Streamlit's upload endpoint refuses its files."""
    import streamlit as st

    if not served_beyond_localhost():
        return
    guard_uploads()
    if st.session_state.get(AUTH_KEY):
        return
    token = configured_token()
    if token is None:
        st.text(NO_TOKEN_MESSAGE)
        st.stop()
    name = cookie_name(st.get_option("server.port"))
    given = st.query_params.get("token")
    if given is not None:
        st.query_params.pop("token", None)  # never left in the address bar, a bookmark or a shared link
        if hmac.compare_digest(given.encode(), token.encode()):
            _authenticate()
            _set_cookie(name, cookie_value(token))
            return
    cookie = st.context.cookies.get(name)
    if isinstance(cookie, str) and hmac.compare_digest(cookie.encode(), cookie_value(token).encode()):
        _authenticate()
        return
    st.text(GATE_MESSAGE)
    st.stop()


def _authenticate() -> None:
    import streamlit as st
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    st.session_state[AUTH_KEY] = True
    ctx = get_script_run_ctx()
    if ctx is not None:
        _AUTHENTICATED.add(ctx.session_id)


def guard_uploads() -> bool:
    """Put Streamlit's upload endpoint (PUT /_stcore/upload_file/<session>/<file>) behind the token.

    The endpoint is served by Streamlit itself, before any script runs, and asks only for a live session id and
    Streamlit's XSRF cookie, both of which any visitor gets by opening a websocket; it then keeps the file in
    memory until the session ends (1 GiB a file at server.maxUploadSize = 1024). The server's one upload store
    (Runtime.uploaded_file_mgr) is wrapped once per process: beyond localhost, a file for a session that has not
    passed the gate is refused with 403 and never stored. Returns whether the guard is in place."""
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return False  # not a server (AppTest, a script): no endpoint
    manager = Runtime.instance().uploaded_file_mgr
    with _GUARD_LOCK:
        if getattr(manager, GUARDED_FLAG, False):
            return True
        add_file = manager.add_file

        def guarded_add_file(session_id: str, file) -> None:
            if served_beyond_localhost() and session_id not in _AUTHENTICATED:
                from starlette.exceptions import HTTPException

                _LOGGER.warning("Refused an upload (%d bytes) for a session without the dashboard's token",
                                len(getattr(file, "data", b"")))
                raise HTTPException(status_code=403, detail="This dashboard needs its token.")
            add_file(session_id=session_id, file=file)

        manager.add_file = guarded_add_file
        setattr(manager, GUARDED_FLAG, True)
    return True


def _set_cookie(name: str, value: str) -> None:
    """Set the session cookie from the page itself (same origin; Streamlit has no server-side way to set one).
    SameSite=Strict: another site's page cannot make the browser send it. Secure when the page came over https."""
    import streamlit as st

    st.html("<script>document.cookie = " + repr(f"{name}={value}; path=/; max-age=2592000; SameSite=Strict")
            + " + (location.protocol === 'https:' ? '; Secure' : '');</script>", unsafe_allow_javascript=True)


# ----- paths a browser can name ----------------------------------------------------------------------------------
def allowed_roots() -> list[Path]:
    """The folders a browser may name when served beyond localhost: the --allow-path folders, else the run store,
    the folder the server started in and the Hugging Face cache; the server's run store always."""
    given = os.environ.get(ALLOW_ENV, "")
    roots = [Path(p) for p in given.split(os.pathsep) if p.strip()]
    if not roots:
        from huggingface_hub import constants

        roots = [START_DIR, Path(constants.HF_HUB_CACHE)]
    roots.insert(0, default_runs_root())
    unique: list[Path] = []
    for root in roots:
        resolved = root.expanduser().resolve()
        if resolved not in unique:
            unique.append(resolved)
    return unique


def check_path(path: str | Path, what: str, extra: Iterable[Path] = ()) -> Path:
    """`path` resolved (links followed); AccessError naming it when served beyond localhost and it lies outside
    the allowed roots (and `extra`, e.g. the session's own upload folder). On localhost every path is the user's."""
    resolved = Path(path).expanduser().resolve()
    if not served_beyond_localhost():
        return resolved
    roots = [*allowed_roots(), *(Path(e).resolve() for e in extra)]
    if any(resolved.is_relative_to(root) for root in roots):
        return resolved
    raise AccessError(f"{what} '{path}' is outside the folders this dashboard serves to other machines "
                      f"({', '.join(map(str, roots))}); the server's user can allow it with --allow-path")


def check_model_paths(spec, extra: Iterable[Path] = ()) -> None:
    """The files a model spec names: a weights path, an open_clip `local-dir:` architecture."""
    from clipsvd.models.loading import looks_like_path

    if spec.architecture.startswith("local-dir:"):
        check_path(spec.architecture.split(":", 1)[1], "Model folder", extra)
    if looks_like_path(spec.weights):
        check_path(spec.weights, "Weights file", extra)


def check_dataset_paths(spec, extra: Iterable[Path] = ()) -> None:
    """The folder or file a dataset spec reads."""
    if spec.root:
        check_path(spec.root, "Data root", extra)


__all__ = ["ALLOW_ENV", "AccessError", "TOKEN_ENV", "allowed_roots", "check_dataset_paths", "check_model_paths",
           "check_path", "configured_token", "cookie_name", "cookie_value", "gate", "guard_uploads", "is_loopback",
           "served_beyond_localhost"]
