"""Cross-dataset transfer and domain generalisation as CoOp / CLIP-SVD run them: ImageNet and its four variants in
CoOp's DATA layout (fake trees with the real folder and file names), the two protocols, one run on many targets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clipsvd.data import DatasetSpec, load_dataset
from clipsvd.errors import DataError

# Four real ImageNet classes (wnid, CLIP's name as in CoOp's classnames.txt), deliberately not in wnid order.
CLASSES = [("n01498041", "stingray"), ("n01440764", "tench"), ("n01443537", "goldfish"),
           ("n01484850", "great white shark")]
WNIDS = sorted(w for w, _ in CLASSES)
NAME = dict(CLASSES)
# Both real ImageNet-A classes (hendrycks/natural-adv-examples) and both real ImageNet-R classes.
A_SUBSET = ["n01498041", "n01443537"]
R_SUBSET = ["n01484850", "n01443537"]


def png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 255 - value, value // 2)).save(path)


def _classnames(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in CLASSES))


def _coop_split_dataset(root: Path, folder: str, image_dir: str, split_name: str, classes: list[str]) -> None:
    entries = {"train": [], "val": [], "test": []}
    for label, cls in enumerate(classes):
        for split, n in (("train", 2), ("val", 1), ("test", 2)):
            for i in range(n):
                rel = f"{cls}/{split}_{i}.png"
                png(root / folder / image_dir / rel, 40 * label + 10 * i)
                entries[split].append([rel, label, cls])
    (root / folder / split_name).write_text(json.dumps(entries))


def build_coop_tree(root: Path) -> Path:
    """$DATA as CoOp's DATASETS.md lays it out: imagenet (+ its 4 variants), dtd and eurosat."""
    _classnames(root / "imagenet")
    for index, wnid in enumerate(WNIDS):
        for i in range(3):
            png(root / "imagenet/images/train" / wnid / f"{wnid}_{i}.JPEG", 50 * index + 5 * i)
        png(root / "imagenet/images/val" / wnid / f"ILSVRC2012_val_{index:08d}.JPEG", 50 * index + 2)
    _classnames(root / "imagenetv2")
    for label in range(len(CLASSES)):  # V2 folders are labels in classnames.txt's order
        png(root / f"imagenetv2/imagenetv2-matched-frequency-format-val/{label}/img.jpeg", 50 * label)
    _classnames(root / "imagenet-sketch")
    for wnid in WNIDS:
        png(root / f"imagenet-sketch/images/{wnid}/sketch_1.JPEG", 30)
    for folder, image_dir, subset in (("imagenet-adversarial", "imagenet-a", A_SUBSET),
                                      ("imagenet-rendition", "imagenet-r", R_SUBSET)):
        _classnames(root / folder)
        (root / folder / image_dir).mkdir(parents=True)
        (root / folder / image_dir / "README.txt").write_text("released with the data set\n")
        for wnid in subset:
            png(root / folder / image_dir / wnid / "0.jpg", 70)
            png(root / folder / image_dir / wnid / "1.jpg", 90)
    _coop_split_dataset(root, "dtd", "images", "split_zhou_DescribableTextures.json", ["banded", "dotted", "woven"])
    _coop_split_dataset(root, "eurosat", "2750", "split_zhou_EuroSAT.json", ["Forest", "River"])
    return root


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory) -> Path:
    return build_coop_tree(tmp_path_factory.mktemp("DATA"))


def _load(root: Path, name: str):
    return load_dataset(DatasetSpec("coop", name, str(root)))


# ---------------------------------------------------------------------------- loaders

def test_imagenet_labels_follow_sorted_wnids_and_names_come_from_classnames(coop_root):
    ds = _load(coop_root, "ImageNet")
    assert ds.classnames == [NAME[w] for w in WNIDS]
    assert len(ds.train) == 12 and len(ds.test) == 4 and ds.val is None
    assert ds.test.labels == [0, 1, 2, 3] and ds.test.paths[3].parent.name == WNIDS[3]
    assert ds.prompts()[0] == "a photo of a tench."


def test_imagenet_v2_reads_label_folders_in_classnames_order(coop_root):
    ds = _load(coop_root, "imagenetv2")
    assert ds.name == "ImageNetV2" and ds.classnames == [n for _, n in CLASSES]  # file order, not wnid order
    assert [p.parent.name for p in ds.test.paths] == ["0", "1", "2", "3"] and ds.test.labels == [0, 1, 2, 3]
    assert ds.prompts()[0] == "a photo of a stingray."


def test_imagenet_sketch_labels_its_sorted_wnid_folders(coop_root):
    ds = _load(coop_root, "imagenet_sketch")
    assert ds.name == "ImageNetSketch" and ds.classnames == [NAME[w] for w in WNIDS]
    assert ds.test.labels == [0, 1, 2, 3]


@pytest.mark.parametrize("name, subset", [("imagenet_a", A_SUBSET), ("ImageNet-R", R_SUBSET)])
def test_imagenet_a_r_are_their_own_subset_of_classes(coop_root, name, subset):
    """As CoOp's datasets/imagenet_a.py / imagenet_r.py: the sorted folders present (README.txt ignored) are the
    classes, labelled 0..n-1 and named from the 1000-line classnames.txt."""
    ds = _load(coop_root, name)
    assert ds.classnames == [NAME[w] for w in sorted(subset)]
    assert len(ds.classnames) == 2 and ds.test.labels == [0, 0, 1, 1]
    assert [p.parent.name for p in ds.test.paths][::2] == sorted(subset)


def test_variant_folder_without_a_class_name_is_named(tmp_path):
    root = build_coop_tree(tmp_path / "DATA")
    png(root / "imagenet-adversarial/imagenet-a/n09999999/0.jpg", 10)
    with pytest.raises(DataError, match=r"no class name for folder\(s\) \['n09999999'\]"):
        _load(root, "ImageNetA")


@pytest.mark.parametrize("name, folder, inside", [
    ("ImageNet", "imagenet", "images/"), ("ImageNetV2", "imagenetv2", "imagenetv2-matched-frequency-format-val/"),
    ("ImageNetSketch", "imagenet-sketch", "images/"), ("ImageNetA", "imagenet-adversarial", "imagenet-a/"),
    ("ImageNetR", "imagenet-rendition", "imagenet-r/")])
def test_missing_dataset_names_the_expected_folder(tmp_path, name, folder, inside):
    with pytest.raises(DataError) as info:
        _load(tmp_path, name)
    assert str(tmp_path / folder) in str(info.value)
    assert f"{inside} and classnames.txt in <data root>/{folder}/" in str(info.value)


# ---------------------------------------------------------------------------- protocols and presets

from clipsvd.errors import ConfigError  # noqa: E402
from clipsvd.training import ExperimentConfig  # noqa: E402

IMAGENET = "ImageNet"


def _config(root, method="clip-svd", protocol="cross-dataset", **kw) -> ExperimentConfig:
    return ExperimentConfig(method=method, dataset=DatasetSpec("coop", IMAGENET, str(root)), protocol=protocol, **kw)


@pytest.mark.parametrize("kw, message", [
    ({"protocol": "few-shot", "targets": ["DTD"]}, "only the cross-dataset and domain-generalization protocols"),
    ({"targets": ["imagenet"]}, "imagenet is the source dataset"),
    ({"targets": ["DTD", "dtd"]}, "dtd is named twice"),
])
def test_targets_are_checked(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, **kw).validate()


def test_official_targets_need_coop_data():
    config = ExperimentConfig(method="zero-shot", protocol="cross-dataset")  # the default built-in world dataset
    with pytest.raises(ConfigError, match="official cross-dataset targets are CoOp datasets; name the targets"):
        config.validate()
    ExperimentConfig(method="zero-shot", protocol="cross-dataset", targets=["world-shape-sketch"]).validate()


def test_a_test_only_variant_cannot_be_the_source(tmp_path):
    config = ExperimentConfig(method="clip-svd", dataset=DatasetSpec("coop", "imagenet_a", str(tmp_path)),
                              protocol="domain-generalization")
    with pytest.raises(ConfigError, match="ImageNetA|imagenet_a.*test only"):
        config.validate()


def test_no_targets_means_the_official_ones(tmp_path):
    names = lambda c: [s.name for s in c.target_specs()]  # noqa: E731
    assert names(_config(tmp_path, protocol="domain-generalization")) == [
        "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]
    cross = names(_config(tmp_path))
    assert len(cross) == 10 and IMAGENET not in cross and "EuroSAT" in cross
    assert _config(tmp_path, protocol="few-shot").target_specs() == []


# The official values, read by hand from the repositories at the commits the presets name.
OFFICIAL = [
    # CLIP-SVD scripts/cross_dataset.sh + configs/cross_dataset/imagenet.yaml; train.py:121 (200·K iterations)
    ("clip-svd", "cross-dataset", 16, {"iterations": 3200, "lr": 5e-4, "weight_decay": 0.01, "batch_size": 32,
                                       "templates": ["a photo of a {}."]}, "configs/cross_dataset/imagenet.yaml"),
    ("clip-svd", "domain-generalization", 16, {"iterations": 3200, "lr": 5e-4, "batch_size": 32},
     "configs/domain_generalization/imagenet.yaml"),
    # ProLIP configs/experiments/DG_VITB16.yaml (lr_v 1e-5, λ = 1/N, 300 views), scripts/DG_VITB16.sh (--shots 4)
    ("prolip", "domain-generalization", 4, {"lr": 1e-5, "anchor_weight": 0.25, "cached_views": 300},
     "configs/experiments/DG_VITB16.yaml"),
    # CLIPFit scripts/ClipFit/xd_test.sh loads vit_b16_ep10_ctxv1 ImageNet models; ClipFit.py λ = 8
    ("clipfit", "cross-dataset", 16, {"epochs": 10, "text_consistency_weight": 8.0, "lr": 0.002},
     "CLIPFit/trainers/ClipFit.py L365"),
]


@pytest.mark.parametrize("method, protocol, shots, values, source", OFFICIAL)
def test_transfer_presets_match_the_official_values(tmp_path, method, protocol, shots, values, source):
    config = _config(tmp_path, method=method, protocol=protocol, shots=shots)
    resolved = config.method_config()
    for key, value in values.items():
        expected = pytest.approx(value) if isinstance(value, float) else value
        assert getattr(resolved, key) == expected, key
    preset = config.preset()
    assert any(source in where and "@" in where for where in preset.sources.values())


@pytest.mark.parametrize("target, template, source", [
    ("DescribableTextures", "{} texture.", "configs/cross_dataset/dtd.yaml"),
    ("EuroSAT", "a centered satellite photo of {}.", "configs/cross_dataset/eurosat.yaml"),
])
def test_each_target_takes_its_own_official_template(tmp_path, target, template, source):
    from clipsvd.training.experiment import target_templates

    config = _config(tmp_path, targets=[target])
    assert target_templates(config, target) == [template]
    setting = config.setting().__class__("cross-dataset", 16, target, "natural")
    assert "HealthX-Lab/CLIP-SVD@022b1eda02df" in config.preset().sources["lr"]
    from clipsvd.methods import get_method

    assert get_method("clip-svd").preset(setting).sources["templates"].endswith(f"{source} (template)")


def test_repositories_without_transfer_settings_say_so(tmp_path):
    for method, words in (("clip-lora", "ships no cross-dataset"), ("prolip", "RN50 only")):
        notes = _config(tmp_path, method=method).preset().to_dict()["notes"]
        assert any(words in note for note in notes), method
    assert "notes" not in _config(tmp_path, protocol="few-shot").preset().to_dict()


def test_runs_recorded_before_targets_keep_their_cell_key(tmp_path):
    from clipsvd.runs.cells import cell_key, config_record

    record = config_record(_config(tmp_path, protocol="few-shot"))
    old = {k: v for k, v in record.items() if k != "targets"}
    assert cell_key(old) == cell_key(record)
    assert cell_key(config_record(_config(tmp_path, targets=["DTD"]))) != cell_key(
        config_record(_config(tmp_path, targets=["EuroSAT"])))


# ---------------------------------------------------------------------------- one run, many targets

def test_cli_trains_on_the_source_once_and_scores_each_target(coop_root, tmp_path, capsys):
    import numpy as np

    from clipsvd.cli import main
    from clipsvd.runs import RunStore
    from clipsvd.training import restore_run
    from clipsvd.training.evaluate import predict

    runs = str(tmp_path / "runs")
    assert main(["--runs-dir", runs, "train", "--method", "clip-svd", "--arch", "clipsvd-tiny", "--device", "cpu",
                 "--dataset-kind", "coop", "--data-root", str(coop_root), "--dataset", IMAGENET, "--shots", "1",
                 "--protocol", "cross-dataset", "--target", "DTD", "--target", "EuroSAT",
                 "--set", "iterations=2", "--lr", "0.01"]) == 0
    out = capsys.readouterr().out
    [run] = RunStore(runs).list()  # one run
    assert run.config["targets"] == ["DTD", "EuroSAT"] and run.config["setting"]["protocol"] == "cross-dataset"
    metrics = run.metrics
    assert metrics["steps"] == 2 and metrics["targets"] == ["DescribableTextures", "EuroSAT"]
    assert metrics["n_test_all"] == 4  # ImageNet's val images, the source's accuracy
    assert metrics["n_test_DescribableTextures"] == 6 and metrics["n_test_EuroSAT"] == 4
    assert set(metrics["per_class_DescribableTextures"]) == {"banded", "dotted", "woven"}
    assert metrics["target_average"] == pytest.approx(
        (metrics["accuracy_DescribableTextures"] + metrics["accuracy_EuroSAT"]) / 2)
    assert f"target average {metrics['target_average']:.2f}" in out

    # the stored target accuracy is the trained model on the target's own classes and official template
    loaded, method = restore_run(run, "cpu")
    dtd = _load(coop_root, "DTD")
    predictions, labels = predict(method, dtd.test, dtd.prompts(["{} texture."]), loaded.eval_transform())
    assert metrics["accuracy_DescribableTextures"] == pytest.approx(float(np.mean(predictions == labels) * 100))

    # `eval` scores the stored run on the same targets again
    assert main(["--runs-dir", runs, "eval", run.run_id, "--device", "cpu"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["accuracy_EuroSAT"] == pytest.approx(metrics["accuracy_EuroSAT"])
    assert again["target_average"] == pytest.approx(metrics["target_average"])


def test_domain_generalization_scores_the_variants_without_training_again(coop_root):
    from clipsvd.training import run_experiment

    config = ExperimentConfig(method="zero-shot", model=_tiny(), dataset=DatasetSpec("coop", IMAGENET, str(coop_root)),
                              protocol="domain-generalization", shots=1, device="cpu")
    metrics = run_experiment(config).metrics
    assert metrics["targets"] == ["ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]
    assert {metrics[f"n_test_{t}"] for t in ("ImageNetV2", "ImageNetSketch")} == {4}
    assert set(metrics["per_class_ImageNetA"]) == {"stingray", "goldfish"}  # the 200-class subset, here 2
    assert metrics["target_average"] is not None


def test_a_method_that_cannot_score_new_classes_leaves_targets_empty(coop_root):
    from clipsvd.training import run_experiment

    config = ExperimentConfig(method="linear-probe", model=_tiny(), shots=1, device="cpu", targets=["EuroSAT"],
                              dataset=DatasetSpec("coop", IMAGENET, str(coop_root)), protocol="cross-dataset",
                              hyperparameters={"epochs": 1})
    metrics = run_experiment(config).metrics
    assert metrics["accuracy"] is not None
    assert metrics["accuracy_EuroSAT"] is None and metrics["target_average"] is None


def test_a_missing_target_is_named_before_training(coop_root):
    from clipsvd.training import run_experiment

    config = _config(coop_root, targets=["UCF101"], model=_tiny(), device="cpu", shots=1)
    with pytest.raises(DataError, match=r"ucf101 \(CoOp's DATASETS.md puts UCF-101-midframes/ and "
                                        r"split_zhou_UCF101.json in <data root>/ucf101/\)"):
        run_experiment(config)


def _tiny():
    from clipsvd.models import ModelSpec

    return ModelSpec("clipsvd-tiny", "random", 0)
