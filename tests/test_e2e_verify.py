"""End to end (issue 21): Heads → Explain → Verify through the "Explain them" and "Ablate these heads" links on a
world run, in Chromium: the Verify page opens with the heads Explain showed, ablates them, and shows the table
and a patch heatmap. Skipped where /usr/bin/chromium or playwright is missing (the recipes of test_e2e)."""
import dataclasses

import pytest

from clipsvd.data import DatasetSpec
from clipsvd.models import ModelSpec
from clipsvd.runs import RunStore
from clipsvd.training import ExperimentConfig, run_experiment
from tests.test_e2e import (  # noqa: F401  (fixtures: one server and one tab for this module)
    WAIT_MS,
    assert_no_exception,
    expect,
    goto,
    page,
    pytestmark,
    screenshot,
    server,
    wait_idle,
)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """The store the server reads, holding one CLIP-SVD run of the world CLIP on the world's microscopy shapes."""
    root = tmp_path_factory.mktemp("e2e-verify-runs")
    config = ExperimentConfig(method="clip-svd", model=ModelSpec.default(),
                              dataset=DatasetSpec("builtin", "world-shape-microscopy"), shots=1, seed=1,
                              device="cpu", hyperparameters={"epochs": 1}, max_test_per_class=2)
    assert run_experiment(dataclasses.replace(config), RunStore(root)).status == "completed"
    return root


def test_heads_explain_verify_through_the_links(page):
    goto(page, "Heads", "Heads")
    assert_no_exception(page)
    page.get_by_role("link", name="Explain them").first.click()
    expect(page.get_by_role("heading", name="Explain (TextSpan)", exact=True)).to_be_visible(timeout=WAIT_MS)
    wait_idle(page)
    page.get_by_role("button", name="Run TextSpan").click()
    wait_idle(page)
    assert_no_exception(page)
    page.get_by_role("link", name="Ablate these heads").first.click()
    expect(page.get_by_role("heading", name="Verify", exact=True)).to_be_visible(timeout=WAIT_MS)
    wait_idle(page)
    assert "heads=L" in page.url  # the heads Explain showed, carried in the URL
    expect(page.get_by_role("radio", name="a hand-picked list")).to_be_checked()
    page.get_by_role("button", name="Run the ablation").click()
    wait_idle(page)
    assert_no_exception(page)
    expect(page.get_by_text("Accuracy, overall (%)")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(".js-plotly-plot .heatmaplayer").first).to_be_attached(timeout=WAIT_MS)
    # the caption over the maps (the ground-truth table's cells hold the same words, drawn in a canvas grid)
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text="8 × 8 patch grid").first).to_be_visible(
        timeout=WAIT_MS)
    screenshot(page, "verify")
