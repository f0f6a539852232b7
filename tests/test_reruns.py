"""A click's callback runs even when a newer rerun request (a page switch) arrives as its run starts (issue 22;
clipsvd.app.reruns). The run's first step is replayed on Streamlit's own session state, with a yield callback
that hands over a pending page switch the way ScriptRunner._maybe_handle_execution_control_request does."""
import contextvars

import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetStates
from streamlit.runtime.scriptrunner import RerunData, RerunException
from streamlit.runtime.scriptrunner_utils.script_run_context import ThreadState
from streamlit.runtime.state.common import WidgetMetadata
from streamlit.runtime.state.safe_session_state import SafeSessionState
from streamlit.runtime.state.session_state import SessionState

from clipsvd.app.reruns import PATCHED_FLAG, keep_clicks

BUTTON_ID = "$$ID-start_training"


def click_then_page_switch() -> tuple[list[str], list[RerunData], str | None]:
    """The Start button's click applied while a page switch waits: (callbacks run, requests still pending, the
    page the run was pre-empted for, if it was)."""
    clicks: list[str] = []
    state = SessionState()
    state.register_widget(WidgetMetadata(id=BUTTON_ID, deserializer=bool, serializer=bool,
                                         value_type="trigger_value", callback=lambda: clicks.append("start")),
                          "start_training")
    pending = [RerunData(page_name="Runs")]

    def take_pending_request() -> None:
        if pending:
            raise RerunException(pending.pop())

    safe = SafeSessionState(state, take_pending_request)
    states = WidgetStates()
    widget = states.widgets.add()
    widget.id, widget.trigger_value = BUTTON_ID, True

    def run() -> str | None:
        ThreadState.initialize()  # what ScriptRunContext.reset does at the start of a run
        try:
            safe.on_script_will_rerun(states)
        except RerunException as exc:
            return exc.rerun_data.page_name
        return None

    preempted_for = contextvars.copy_context().run(run)
    return clicks, pending, preempted_for


def test_streamlit_alone_drops_the_click_for_the_page_switch(monkeypatch):
    """The mechanism: unchanged, Streamlit takes the page switch before it runs the click's callback. (Should a
    Streamlit release apply widget states first, this fails and clipsvd.app.reruns can go.)"""
    current = SafeSessionState.on_script_will_rerun
    monkeypatch.setattr(SafeSessionState, "on_script_will_rerun", getattr(current, "__wrapped__", current))
    monkeypatch.setattr(SafeSessionState, PATCHED_FLAG, False, raising=False)
    clicks, pending, preempted_for = click_then_page_switch()
    assert (clicks, pending, preempted_for) == ([], [], "Runs")


@pytest.mark.parametrize("times", [1, 2])
def test_keep_clicks_runs_the_callback_and_leaves_the_page_switch_pending(times):
    for _ in range(times):  # idempotent: installed once however often pages import it
        assert keep_clicks()
    clicks, pending, preempted_for = click_then_page_switch()
    assert clicks == ["start"]
    assert preempted_for is None and [r.page_name for r in pending] == ["Runs"]  # taken right after, by the runner
    assert not hasattr(SafeSessionState.on_script_will_rerun.__wrapped__, "__wrapped__")


def test_the_yield_callback_is_restored_after_the_step():
    keep_clicks()
    calls = []
    safe = SafeSessionState(SessionState(), lambda: calls.append(1))
    contextvars.copy_context().run(lambda: (ThreadState.initialize(), safe.on_script_will_rerun(WidgetStates())))
    safe["anything"] = 1  # any later access yields again, as Streamlit means it to
    assert calls == [1]
