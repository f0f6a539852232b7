"""The transfer protocols on the dashboard and in the reports: the Train page's targets widget (validated as the
CLI validates), the Compare/Reproduce table of source, targets and target average with the published averages
(none is published), the run report's target section, and the time estimate counting the targets' images."""
from __future__ import annotations

import time

import pytest

from clipsvd.data import DatasetSpec
from clipsvd.runs import RunStore
from tests.conftest import TINY
from tests.test_app import app_at, assert_clean
from tests.test_transfer import build_coop_tree

IMAGENET = "ImageNet"


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory):
    return build_coop_tree(tmp_path_factory.mktemp("DATA"))


def _train_page(tmp_path, root, name=IMAGENET):
    return app_at("pages/2_Train.py", tmp_path, dataset_spec=DatasetSpec("coop", name, str(root)))


# ---------------------------------------------------------------------------- Train page

def test_train_page_offers_the_targets_found_and_defaults_to_the_official_ones(tmp_path, coop_root):
    at = _train_page(tmp_path, coop_root)
    keys = [w.key for w in at.multiselect]
    assert not any(k.startswith("_w_train_targets") for k in keys)  # few-shot: no targets
    at.radio(key="_w_train_protocol").set_value("domain-generalization").run()
    assert_clean(at)
    [targets] = [w for w in at.multiselect if w.key.startswith("_w_train_targets")]
    assert targets.options == ["DescribableTextures", "EuroSAT", "ImageNetV2", "ImageNetSketch", "ImageNetA",
                               "ImageNetR"]  # what the data root holds, the source left out
    assert targets.value == ["ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]
    assert "datasets the trained run is also tested on" in targets.help  # the config field's help
    at.radio(key="_w_train_protocol").set_value("cross-dataset").run()
    [targets] = [w for w in at.multiselect if w.key.startswith("_w_train_targets")]
    assert targets.value == ["DescribableTextures", "EuroSAT"]  # the official ones found
    missing = " ".join(c.value for c in at.caption)
    assert "Official cross-dataset targets not under the data root: Caltech101" in missing
    assert "ucf101" in missing and "UCF-101-midframes" in missing
    targets.set_value([]).run()
    assert any("Choose at least one target" in w.value for w in at.warning)
    assert at.button(key="start_training").disabled


def test_train_page_shows_the_validation_message_and_starts_nothing(tmp_path, coop_root):
    at = _train_page(tmp_path, coop_root, name="imagenet_a")
    at.radio(key="_w_train_protocol").set_value("domain-generalization").run()
    assert not at.exception
    assert any("imagenet\\_a is test only (CoOp trains on none" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert at.button(key="start_training").disabled


def test_train_page_runs_the_source_and_each_chosen_target(tmp_path, coop_root):
    at = _train_page(tmp_path, coop_root)
    at.radio(key="_w_train_protocol").set_value("cross-dataset").run()
    [targets] = [w for w in at.multiselect if w.key.startswith("_w_train_targets")]
    targets.set_value(["EuroSAT", "ImageNetR"]).run()
    [iterations] = [w.key for w in at.text_input if w.key.startswith("hp-clip-svd-") and w.key.endswith("-iterations")]
    at.text_input(key=iterations).input("2").run()
    at.button(key="start_training").click().run()
    assert_clean(at)
    deadline = time.time() + 120
    while time.time() < deadline and not any(s.value == "Runs of this job" for s in at.subheader):
        time.sleep(1)
        at.run()
    assert_clean(at)
    [run] = RunStore(tmp_path).list()
    assert run.status == "completed" and run.config["targets"] == ["EuroSAT", "ImageNetR"]
    assert run.metrics["targets"] == ["EuroSAT", "ImageNetR"] and run.metrics["steps"] == 2
    assert run.metrics["n_test_ImageNetR"] == 4 and run.metrics["target_average"] is not None
