"""A click is never lost to the rerun that follows it (issue 22: "Start training" clicks followed at once by a
page switch made no job, 1 to 8 of 12-15 clicks with 3 sessions, with nothing said).

Why clicks were lost, in Streamlit's own code (1.67; the same in every 1.x read):

- The browser sends a button click once, as a *trigger* in one `rerun_script` message, and forgets it at once
  (frontend WidgetStateManager: `pendingTriggerIds` are deleted right after the flush). A page switch sends a
  second message without it, and without the old page's widget states (App.onPageChange keeps only the elements
  outside the page).
- While the click's request is still queued, the two merge and the trigger survives
  (streamlit/runtime/scriptrunner_utils/script_requests.py, `_coalesce_widget_states`; hence
  `runner.fastReruns = false` in .streamlit/config.toml). But once the script thread has *taken* the click's
  request (`ScriptRequests.on_scriptrunner_ready` / `on_scriptrunner_yield` set the state back to CONTINUE), a
  newer request replaces the pending data outright (`_request_rerun_locked`, CONTINUE branch).
- The thread then starts the click's run (`ScriptRunner._run_script` → `code_to_exec`), whose first step is
  `SafeSessionState.on_script_will_rerun` (streamlit/runtime/state/safe_session_state.py). That method calls its
  yield callback (`ScriptRunner._maybe_handle_execution_control_request`) *before* it applies the widget states
  and runs the callbacks: a page switch that arrived in that window raises RerunException there, the page switch
  runs instead, and the click's trigger (and its on_click callback) is gone for good.

Nothing a page can do runs in that window, so the fix is in that one step: while a run applies the browser's
widget states and runs their callbacks, the yield callback does nothing. Callbacks (user intentions: Start,
Cancel, Delete) then always run to the end; the runner checks for a newer request right after them
(`code_to_exec` calls `_maybe_handle_execution_control_request` after `on_script_will_rerun`), so the page switch
still happens at once, one callback's length later.
"""
from __future__ import annotations

import functools
import logging

PATCHED_FLAG = "_clipsvd_keeps_clicks"
_LOGGER = logging.getLogger(__name__)


def _no_yield() -> None:
    """Stands in for the yield callback while widget states are applied: no rerun or stop request is taken."""


def keep_clicks() -> bool:
    """Make Streamlit apply a run's widget states and run their callbacks before it takes a newer rerun request.
    Idempotent; returns whether the change is in place (False, with a warning, where this Streamlit lacks the
    step it changes)."""
    from streamlit.runtime.state.safe_session_state import SafeSessionState

    if getattr(SafeSessionState, PATCHED_FLAG, False):
        return True
    original = getattr(SafeSessionState, "on_script_will_rerun", None)
    if original is None or "_yield_callback" not in getattr(SafeSessionState, "__annotations__", {}):
        _LOGGER.warning("This Streamlit has no SafeSessionState.on_script_will_rerun with a yield callback: a click "
                        "followed at once by a page switch may be lost (see clipsvd.app.reruns)")
        return False

    @functools.wraps(original)
    def on_script_will_rerun(self, *args, **kwargs):
        yield_callback = self._yield_callback
        object.__setattr__(self, "_yield_callback", _no_yield)
        try:
            return original(self, *args, **kwargs)
        finally:
            object.__setattr__(self, "_yield_callback", yield_callback)

    SafeSessionState.on_script_will_rerun = on_script_will_rerun
    setattr(SafeSessionState, PATCHED_FLAG, True)
    return True


__all__ = ["keep_clicks"]
