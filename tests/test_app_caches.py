"""The dashboard's per-process caches: one cached builder per model spec."""
import streamlit as st

import clipsvd.models
from clipsvd.app import caches
from clipsvd.models import ModelSpec
from tests.test_app import app_at, assert_clean


def test_the_model_page_and_the_model_label_build_a_spec_once(tmp_path, monkeypatch):
    """'Use this model' (parameter count, label) and the label shown for the chosen model share one build."""
    st.cache_resource.clear()
    built, real = [], clipsvd.models.load_model

    def counting(spec, device="auto"):
        built.append(spec)
        return real(spec, device)

    monkeypatch.setattr(caches, "load_model", counting)
    monkeypatch.setattr(clipsvd.models, "load_model", counting)  # what a page imports when it runs
    at = app_at("pages/1_Model_and_data.py", tmp_path, model_spec=None)
    at.button(key="use_model").click().run()
    assert_clean(at)
    assert at.session_state["model_spec"] == ModelSpec.default()
    assert built.count(ModelSpec.default()) == 1, built
