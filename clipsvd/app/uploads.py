"""A browser session's uploads (checkpoints, zipped ImageFolders): one temporary folder per session, within a
quota, deleted when the session ends; folders earlier servers left are swept when this one starts.

Streamlit has no public session-end hook. The folder object lives in the session's state, and its weakref
finaliser deletes the folder once Streamlit drops that state (the session closed, or its reconnect window ran
out); a sweep on every new folder removes the folders of this server's sessions that are no longer alive and have
been idle for a while, in case a state lingers.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from clipsvd.data.uploads import UploadFolder, sweep_stale_uploads

UPLOADS_KEY = "_upload_folder"


def _session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else ""


def _session_alive(session_id: str) -> bool:
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return True  # not a server (AppTest, a script): nothing to compare against
    return Runtime.instance().is_active_session(session_id)


@st.cache_resource(show_spinner=False)
def sweep_at_start() -> int:
    """Once per server process: remove the upload folders of servers that are no longer running."""
    return len(sweep_stale_uploads())


def session_uploads() -> UploadFolder:
    """This session's upload folder, made on first use (the quota is read from the environment then)."""
    folder = st.session_state.get(UPLOADS_KEY)
    if folder is None or not folder.alive:
        sweep_stale_uploads(live_owner=_session_alive)
        folder = UploadFolder(_session_id())
        st.session_state[UPLOADS_KEY] = folder
    folder.touch()
    return folder


def session_upload_roots() -> list[Path]:
    """The folders this session may name besides the allowed roots: its own uploads (none before the first)."""
    folder = st.session_state.get(UPLOADS_KEY)
    return [folder.path] if folder is not None and folder.alive else []


def save_upload(uploaded) -> Path:
    """Write an uploaded file once, in a folder named by Streamlit's file id, under a sanitised name."""
    from clipsvd.formatting import file_stem

    return session_uploads().write(Path(uploaded.file_id) / file_stem(Path(uploaded.name).name),
                                   bytes(uploaded.getbuffer()), what=uploaded.name)


__all__ = ["UPLOADS_KEY", "save_upload", "session_upload_roots", "session_uploads", "sweep_at_start"]
