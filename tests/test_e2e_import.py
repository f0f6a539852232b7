"""End to end (issue 24): a model fine-tuned elsewhere imported through the browser.

A real Streamlit server on the defaults (the world CLIP) and Debian's Chromium, as in tests/test_e2e.py, whose
fixtures and wait helpers this module shares (its own server and run store). The fine-tune is fabricated from the
server's default model with one known change: the value rows of one visual attention head scaled by 1.5, so that
head, and only it, changed its OV circuit by exactly 0.5. Skipped where /usr/bin/chromium or playwright is missing.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save_file

from clipsvd.models import ModelSpec, load_model
from clipsvd.models.world_weights import WORLD_MODEL_NAME, WORLD_WEIGHTS
from clipsvd.runs import RunStore
from tests.test_e2e import (  # noqa: F401 (fixtures are found by name)
    CHROMIUM, WAIT_MS, assert_no_exception, expect, goto, page, runs_root, screenshot, server, wait_idle)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]

LAYER, HEAD, SCALE = 2, 1, 1.5  # the visual head the fabricated fine-tune changes, and by how much


@pytest.fixture(scope="module")
def base_state() -> tuple[dict, int]:
    """The server's default model (the shipped world CLIP) as a plain state dict, and its visual heads a layer."""
    model = load_model(ModelSpec(WORLD_MODEL_NAME, WORLD_WEIGHTS), "cpu").model
    heads = model.visual.transformer.resblocks[LAYER].attn.num_heads
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, heads


def save_state(state: dict, path: Path) -> Path:
    save_file(state, str(path))
    return path


def finetune_one_head(state: dict, heads: int, folder: Path) -> Path:
    """A full fine-tune of `state` whose only change is the value rows of visual head HEAD of layer LAYER × SCALE:
    Δ(W_O W_V) = (SCALE - 1) · W_O W_V for that head, zero for every other."""
    changed = dict(state)
    key = f"visual.transformer.resblocks.{LAYER}.attn.in_proj_weight"
    weight = state[key].clone()  # rows: q, k, v, each `width` long, head after head
    width = weight.shape[1]
    head_width = width // heads
    rows = slice(2 * width + HEAD * head_width, 2 * width + (HEAD + 1) * head_width)
    weight[rows] *= SCALE
    changed[key] = weight
    return save_state(changed, folder / "one-head.safetensors")


def open_import_panel(page) -> None:
    goto(page, "Model and data", "Model & data")
    if not page.get_by_label("Fine-tuned checkpoint path", exact=True).is_visible():
        page.get_by_text("Import a fine-tuned model").first.click()
    expect(page.get_by_label("Fine-tuned checkpoint path", exact=True)).to_be_visible()


def import_path(page, path: Path) -> None:
    """Type the fine-tuned file's path (localhost: any local path is the user's), keep the default base (the
    world CLIP, as selected), press Import and wait for the run to end."""
    field = page.get_by_label("Fine-tuned checkpoint path", exact=True)
    field.fill(str(path))
    field.press("Enter")
    wait_idle(page)
    button = page.get_by_role("button", name="Import", exact=True)
    expect(button).to_be_enabled()
    button.click()
    wait_idle(page)


def test_a_model_identical_to_its_base_is_refused_and_no_run_kept(page, runs_root, base_state, tmp_path):
    same = save_state(base_state[0], tmp_path / "same.safetensors")
    open_import_panel(page)
    import_path(page, same)
    alert = page.locator('[data-testid="stAlertContentError"]').filter(has_text="identical to its base")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text(str(same))  # the path the user typed, shown as text
    assert page.locator('[data-testid="stAlertContentSuccess"]').count() == 0
    assert RunStore(runs_root).list() == []
    assert_no_exception(page)


def test_import_a_full_finetune_and_open_heads_on_it(page, runs_root, base_state, tmp_path):
    path = finetune_one_head(*base_state, tmp_path)
    open_import_panel(page)
    import_path(page, path)
    [run] = RunStore(runs_root).list()
    assert run.config["method"] == "imported" and run.message == f"imported from {path.name}"
    assert run.config["imported"]["finetuned"]["path"] == str(path.resolve())
    assert run.config["imported"]["base"]["spec"] == ModelSpec(WORLD_MODEL_NAME, WORLD_WEIGHTS).to_dict()
    success = page.locator('[data-testid="stAlertContentSuccess"]')  # its icon is text too: read the message
    expect(success.locator("p")).to_have_text(f"Imported as run {run.run_id}: imported from {path.name}")
    screenshot(page, "import-done")
    assert_no_exception(page)

    page.locator('[data-testid="stMain"]').get_by_role("link").filter(has_text="Heads").click()
    expect(page.get_by_role("heading", name="Heads", exact=True)).to_be_visible(timeout=WAIT_MS)
    wait_idle(page)
    expect(page.get_by_role("combobox", name="Fine-tuned run")).to_be_visible()
    expect(page.get_by_text(run.run_id).first).to_be_visible()
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible(timeout=WAIT_MS)
    # the one head the fabricated fine-tune changed tops the ranking, by exactly SCALE - 1
    metrics = page.locator('[data-testid="stMetric"]')
    expect(metrics.filter(has_text="Most changed")).to_contain_text(f"layer {LAYER} · head {HEAD}")
    expect(metrics.filter(has_text="ov_change")).to_contain_text(f"{SCALE - 1:.3g}")
    screenshot(page, "import-heads")
    assert_no_exception(page)
