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
