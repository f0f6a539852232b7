"""Tests of clipsvd.data on small trees built in tmp_path, plus the two built-in datasets."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipsvd.data import (
    TEMPLATES,
    ArrayImageSplit,
    ClassificationDataset,
    DatasetSpec,
    FileImageSplit,
    TransformedSplit,
    base_novel,
    builtin_datasets,
    eval_transform,
    few_shot,
    load_animal_shape,
    load_dataset,
    train_transform,
)
from clipsvd.data.builtin import FASHION_MNIST_DIR, animal_shape_dir
from clipsvd.errors import DataError

# ---------------------------------------------------------------------------- helpers


def png(path: Path, value: int = 128, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = (value, 255 - value, value // 2) if mode == "RGB" else value
    Image.new(mode, size, color).save(path)
    return path


def image_tree(root: Path, counts: dict[str, int], ext: str = ".png") -> Path:
    for c, n in counts.items():
        for i in range(n):
            png(root / c / f"{c}_{i}{ext}", value=10 * i)
    return root


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def array_split(labels: list[int]) -> ArrayImageSplit:
    images = np.arange(len(labels) * 16, dtype=np.uint8).reshape(len(labels), 4, 4) % 255
    return ArrayImageSplit(images.astype(np.uint8), labels, "toy")


def toy_dataset(n_classes: int = 5, per_class: int = 4) -> ClassificationDataset:
    labels = [c for c in range(n_classes) for _ in range(per_class)]
    split = array_split(labels)
    return ClassificationDataset(
        name="toy", classnames=[f"class_{c}" for c in range(n_classes)], template="a photo of a {}.",
        train=split, val=None, test=split.subset(range(len(labels))),
    )


# ---------------------------------------------------------------------------- ImageFolder


def test_imagefolder_flat_split_is_deterministic_and_per_class(tmp_path):
    root = image_tree(tmp_path / "imgs", {"zebra": 5, "ant_eater": 5, "cat": 10})
    spec = DatasetSpec("imagefolder", "mine", str(root))
    ds = load_dataset(spec)
    assert ds.classnames == ["ant eater", "cat", "zebra"]  # sorted folder names, '_' -> ' '
    assert ds.class_counts("train") == {"ant eater": 3, "cat": 6, "zebra": 3}
    assert ds.class_counts("val") == {"ant eater": 1, "cat": 2, "zebra": 1}
    assert ds.class_counts("test") == {"ant eater": 1, "cat": 2, "zebra": 1}
    paths = [set(map(str, s.paths)) for s in (ds.train, ds.val, ds.test)]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
    assert len(paths[0] | paths[1] | paths[2]) == 20
    for s in (ds.train, ds.val, ds.test):  # label matches the folder
        assert all(ds.classnames[l].replace(" ", "_") == p.parent.name for p, l in zip(s.paths, s.labels))
    again = load_dataset(spec)
    assert again.train.paths == ds.train.paths and again.test.paths == ds.test.paths
    image, label = ds.train[0]
    assert image.mode == "RGB" and isinstance(label, int)
    assert ds.prompts() == ["a photo of a ant eater.", "a photo of a cat.", "a photo of a zebra."]


def test_imagefolder_small_class_keeps_one_test_image(tmp_path):
    root = image_tree(tmp_path / "imgs", {"a": 2, "b": 3})
    ds = load_dataset(DatasetSpec("imagefolder", "small", str(root)))
    assert ds.class_counts("test") == {"a": 1, "b": 1}
    assert ds.class_counts("train") == {"a": 1, "b": 1}


def test_imagefolder_with_split_folders(tmp_path):
    root = tmp_path / "imgs"
    image_tree(root / "train", {"dog": 3, "cat": 2})
    image_tree(root / "val", {"dog": 1, "cat": 1})
    image_tree(root / "test", {"cat": 2})
    ds = load_dataset(DatasetSpec("imagefolder", "pre", str(root)))
    assert ds.classnames == ["cat", "dog"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (5, 2, 2)
    assert ds.test.labels == [0, 0]
    assert all(p.parent.parent.name == "test" for p in ds.test.paths)


def test_imagefolder_train_only_holds_out_test(tmp_path):
    root = tmp_path / "imgs"
    image_tree(root / "train", {"dog": 5, "cat": 5})
    ds = load_dataset(DatasetSpec("imagefolder", "pre", str(root)))
    assert ds.val is None
    assert ds.class_counts("test") == {"cat": 1, "dog": 1}
    assert len(ds.train) == 8


def test_imagefolder_unknown_class_in_test_folder(tmp_path):
    root = tmp_path / "imgs"
    image_tree(root / "train", {"dog": 2, "cat": 2})
    image_tree(root / "test", {"cow": 1})
    with pytest.raises(DataError, match="cow"):
        load_dataset(DatasetSpec("imagefolder", "pre", str(root)))


def test_imagefolder_warns_about_non_images(tmp_path):
    root = image_tree(tmp_path / "imgs", {"a": 3, "b": 3})
    (root / "a" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match="notes.txt"):
        ds = load_dataset(DatasetSpec("imagefolder", "w", str(root)))
    assert all(p.suffix == ".png" for s in (ds.train, ds.test) for p in s.paths)


def test_imagefolder_errors(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=str(missing)):
        load_dataset(DatasetSpec("imagefolder", "x", str(missing)))

    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(DatasetSpec("imagefolder", "x", str(tmp_path / "empty_root")))

    root = image_tree(tmp_path / "one", {"a": 3, "b": 3})
    (root / "hollow").mkdir()
    with pytest.raises(DataError, match=r"hollow.*no images"):
        load_dataset(DatasetSpec("imagefolder", "x", str(root)))

    single = image_tree(tmp_path / "single", {"only": 4})
    with pytest.raises(DataError, match=rf"only one class.*{single}"):
        load_dataset(DatasetSpec("imagefolder", "x", str(single)))

    with pytest.raises(DataError, match="needs 'root'"):
        load_dataset(DatasetSpec("imagefolder", "x"))


# ---------------------------------------------------------------------------- bad image files


def test_corrupt_and_empty_images_name_the_file(tmp_path):
    good = png(tmp_path / "good.png")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png at all" * 10)
    empty = tmp_path / "empty.png"
    empty.touch()
    split = FileImageSplit([good, garbage, empty], [0, 1, 1])
    assert split.load_image(0).mode == "RGB"
    with pytest.raises(DataError, match="garbage.png"):
        split.load_image(1)
    with pytest.raises(DataError, match=r"0 bytes.*empty.png"):
        split[2]
    with pytest.raises(DataError) as info:
        split.validate()
    assert "2 of 3" in str(info.value) and "garbage.png" in str(info.value) and "empty.png" in str(info.value)
    split.subset([0]).validate()  # good files pass


def test_error_listings_name_the_first_items_then_count_the_rest():
    from clipsvd.data.splits import listed

    assert listed(["a", "b"]) == "a\n  b"
    assert listed([f"f{i}" for i in range(7)]) == "f0\n  f1\n  f2\n  f3\n  f4\n  ... and 2 more"
    assert listed(["a", "b"], total=9) == "a\n  b\n  ... and 7 more"


def test_cap_per_class_is_seeded_and_keeps_position_order():
    from clipsvd.data.sampling import cap_per_class

    split = ArrayImageSplit(np.zeros((9, 4, 4), np.uint8), [0, 1, 0, 1, 0, 1, 2, 0, 1], "x")
    capped = cap_per_class(split, 2)
    assert sorted(capped.labels) == [0, 0, 1, 1, 2] and capped.rows == sorted(capped.rows)
    assert cap_per_class(split, 2).rows == capped.rows


def test_grey_and_16bit_images_become_rgb(tmp_path):
    grey = png(tmp_path / "grey.png", value=77, mode="L")
    deep = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)).save(deep)
    split = FileImageSplit([grey, deep], [0, 1])
    g = split.load_image(0)
    assert g.mode == "RGB" and g.getpixel((0, 0)) == (77, 77, 77)
    d = np.asarray(split.load_image(1))
    assert d.shape == (2, 2, 3) and d.max() == 255 and d.min() == 0  # rescaled, not clipped to white


def test_array_split_modes_and_describe():
    grey = ArrayImageSplit(np.zeros((3, 5, 6), np.uint8), [0, 1, 2], "arr")
    assert grey.load_image(1).mode == "RGB" and grey.load_image(1).size == (6, 5)
    one_channel = ArrayImageSplit(np.zeros((2, 4, 4, 1), np.uint8), [0, 1], "c1")
    assert one_channel.load_image(0).mode == "RGB"
    sub = grey.subset([2, 0])
    assert sub.labels == [2, 0] and sub.describe(0) == "arr[2]"
    with pytest.raises(DataError, match="uint8"):
        ArrayImageSplit(np.zeros((2, 4, 4), np.float32), [0, 1], "f")
    with pytest.raises(DataError, match="shape"):
        ArrayImageSplit(np.zeros((2, 4, 4, 28), np.uint8), [0, 1], "3d")
    with pytest.raises(DataError, match="labels"):
        ArrayImageSplit(np.zeros((2, 4, 4), np.uint8), [0], "n")


# ---------------------------------------------------------------------------- CoOp


PETS_CLASSES = ["abyssinian", "american_bulldog", "beagle"]


def coop_pets(root: Path) -> Path:
    ddir = root / "oxford_pets"
    split = {"train": [], "val": [], "test": []}
    for label, name in enumerate(PETS_CLASSES):
        for s, n in (("train", 3), ("val", 1), ("test", 2)):
            for i in range(n):
                rel = f"{name}_{s}_{i}.jpg"
                png(ddir / "images" / rel.replace(".jpg", ".png")).rename(ddir / "images" / rel)
                split[s].append([rel, label, name])
    write_json(ddir / "split_zhou_OxfordPets.json", split)
    return root


def test_coop_split_json(tmp_path):
    root = coop_pets(tmp_path / "DATA")
    ds = load_dataset(DatasetSpec("coop", "OxfordPets", str(root)))
    assert ds.name == "OxfordPets" and ds.classnames == PETS_CLASSES
    assert ds.template == TEMPLATES["OxfordPets"] == "a photo of a {}, a type of pet."
    assert (len(ds.train), len(ds.val), len(ds.test)) == (9, 3, 6)
    assert ds.train.paths[0] == root / "oxford_pets" / "images" / "abyssinian_train_0.jpg"
    assert ds.prompts()[1] == "a photo of a american bulldog, a type of pet."
    assert ds.train[0][0].mode == "RGB"
    # the folder name and the dataset folder itself are accepted too
    assert load_dataset(DatasetSpec("coop", "oxford_pets", str(root / "oxford_pets"))).classnames == PETS_CLASSES
    custom = load_dataset(DatasetSpec("coop", "OxfordPets", str(root), template="{} pet."))
    assert custom.prompts()[0] == "abyssinian pet."


def test_coop_errors(tmp_path):
    root = coop_pets(tmp_path / "DATA")
    split_path = root / "oxford_pets" / "split_zhou_OxfordPets.json"
    good = json.loads(split_path.read_text())

    (root / "oxford_pets" / "images" / "beagle_test_1.jpg").unlink()
    with pytest.raises(DataError, match="beagle_test_1.jpg"):
        load_dataset(DatasetSpec("coop", "OxfordPets", str(root)))

    bad = json.loads(json.dumps(good))
    bad["val"][2] = ["beagle_val_0.jpg", "2", "beagle"]
    write_json(split_path, bad)
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec("coop", "OxfordPets", str(root)))
    msg = str(info.value)
    assert "split_zhou_OxfordPets.json" in msg and "'val' entry 2" in msg and "label must be a non-negative int" in msg

    bad["val"][2] = ["beagle_val_0.jpg", 2]
    write_json(split_path, bad)
    with pytest.raises(DataError, match=r"'val' entry 2: expected \[relative image path"):
        load_dataset(DatasetSpec("coop", "OxfordPets", str(root)))

    split_path.unlink()
    with pytest.raises(DataError, match="split_zhou_OxfordPets.json"):
        load_dataset(DatasetSpec("coop", "OxfordPets", str(root)))

    with pytest.raises(DataError, match="unknown CoOp dataset"):
        load_dataset(DatasetSpec("coop", "CIFAR10", str(root)))
    with pytest.raises(DataError, match="eurosat"):
        load_dataset(DatasetSpec("coop", "EuroSAT", str(root)))


def test_coop_fgvc_aircraft_txt_lists(tmp_path):
    ddir = tmp_path / "DATA" / "fgvc_aircraft"
    ddir.mkdir(parents=True)
    (ddir / "variants.txt").write_text("707-320\nA300B4\nDHC-1\n")
    for s, rows in {
        "train": [("1", "A300B4"), ("2", "707-320"), ("3", "DHC-1")],
        "val": [("4", "DHC-1"), ("7", "A300B4"), ("8", "707-320")],
        "test": [("5", "707-320"), ("6", "A300B4"), ("9", "DHC-1")],
    }.items():
        (ddir / f"images_variant_{s}.txt").write_text("".join(f"{i} {v}\n" for i, v in rows))
        for i, _ in rows:
            png(ddir / "images" / f"{i}.png").rename(ddir / "images" / f"{i}.jpg")
    ds = load_dataset(DatasetSpec("coop", "FGVCAircraft", str(tmp_path / "DATA")))
    assert ds.classnames == ["707-320", "A300B4", "DHC-1"]
    assert ds.train.labels == [1, 0, 2] and ds.train.paths[0].name == "1.jpg"
    assert ds.prompts()[0] == "a photo of a 707-320, a type of aircraft."
    (ddir / "images_variant_test.txt").write_text("5 Boeing 999\n")
    with pytest.raises(DataError, match=r"images_variant_test.txt, line 1.*Boeing 999"):
        load_dataset(DatasetSpec("coop", "FGVCAircraft", str(tmp_path / "DATA")))


def test_coop_imagenet_folders(tmp_path):
    ddir = tmp_path / "DATA" / "imagenet"
    ddir.mkdir(parents=True)
    (ddir / "classnames.txt").write_text("n02 goldfish\nn01 great white shark\n")
    for split in ("train", "val"):
        for wnid in ("n01", "n02"):
            png(ddir / "images" / split / wnid / "a.JPEG".replace(".JPEG", ".png"))
    ds = load_dataset(DatasetSpec("coop", "ImageNet", str(tmp_path / "DATA")))
    assert ds.classnames == ["great white shark", "goldfish"]  # sorted wnids, names from classnames.txt
    assert ds.val is None and len(ds.test) == 2 and ds.test.labels == [0, 1]


# ---------------------------------------------------------------------------- BiomedCoOp

# Deliberately not alphabetical: label order comes from the split file.
BTMRI_CLASSES = ["pituitary_tumor", "glioma", "no_tumor", "meningioma"]


def biomed_tree(root: Path, name: str = "BTMRI") -> Path:
    ddir = root / name
    split = {"train": [], "val": [], "test": []}
    for label, cls in enumerate(BTMRI_CLASSES):
        for s, n in (("train", 2), ("val", 1), ("test", 1)):
            for i in range(n):
                rel = f"{cls}/{s}_{i}.png"
                png(ddir / name / rel, value=label * 40)
                split[s].append([rel, label, cls])
    # one entry whose image lies directly under <root>/<Name>/ (the fallback location)
    png(ddir / "extra" / "glioma_x.png")
    split["train"].append(["extra/glioma_x.png", 1, "glioma"])
    write_json(ddir / f"split_{name}.json", split)
    return root


def test_biomedcoop_names_come_from_json(tmp_path):
    root = biomed_tree(tmp_path / "BiomedData")
    ds = load_dataset(DatasetSpec("biomedcoop", "BTMRI", str(root)))
    assert ds.classnames == BTMRI_CLASSES
    assert ds.prompts()[0] == "a photo of a pituitary tumor."
    assert ds.class_counts() == {"pituitary_tumor": 2, "glioma": 3, "no_tumor": 2, "meningioma": 2}
    assert ds.train.paths[0] == root / "BTMRI" / "BTMRI" / "pituitary_tumor" / "train_0.png"
    assert ds.train.paths[-1] == root / "BTMRI" / "extra" / "glioma_x.png"
    assert (len(ds.val), len(ds.test)) == (4, 4)


def test_biomedcoop_covid_template_and_errors(tmp_path):
    root = biomed_tree(tmp_path / "BiomedData", "COVID-QU-Ex")
    assert load_dataset(DatasetSpec("biomedcoop", "COVID-QU-Ex", str(root))).template == "a chest xray of {}."

    (root / "COVID-QU-Ex" / "COVID-QU-Ex" / "glioma" / "test_0.png").unlink()
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec("biomedcoop", "COVID-QU-Ex", str(root)))
    msg = str(info.value)
    assert str(root / "COVID-QU-Ex" / "COVID-QU-Ex" / "glioma" / "test_0.png") in msg
    assert str(root / "COVID-QU-Ex" / "glioma" / "test_0.png") in msg

    with pytest.raises(DataError, match=r"BUSI.*found COVID-QU-Ex"):
        load_dataset(DatasetSpec("biomedcoop", "BUSI", str(root)))


def test_split_json_inconsistent_class_names(tmp_path):
    root = biomed_tree(tmp_path / "B")
    path = root / "BTMRI" / "split_BTMRI.json"
    data = json.loads(path.read_text())
    data["test"][0][2] = "Pituitary"
    write_json(path, data)
    with pytest.raises(DataError, match="label 0 is called 'pituitary_tumor' and 'Pituitary'"):
        load_dataset(DatasetSpec("biomedcoop", "BTMRI", str(root)))


# ---------------------------------------------------------------------------- MedMNIST


def medmnist_npz(path: Path, n_classes: int = 7, rgb: bool = True, drop: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 14), ("val", 7), ("test", 7)):
        shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
        arrays[f"{s}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(n) % n_classes).reshape(n, 1).astype(np.uint8)
    if drop:
        del arrays[drop]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def test_medmnist_npz(tmp_path):
    path = medmnist_npz(tmp_path / "dermamnist.npz")
    ds = load_dataset(DatasetSpec("medmnist", "derma", str(path)))
    assert ds.classnames[0] == "actinic keratoses and intraepithelial carcinoma" and len(ds.classnames) == 7
    assert (len(ds.train), len(ds.val), len(ds.test)) == (14, 7, 7)
    image, label = ds.test[3]
    assert image.mode == "RGB" and image.size == (28, 28) and label == 3
    assert ds.test.describe(3) == "dermamnist.npz:test_images[3]"

    other = load_dataset(DatasetSpec("medmnist", "x", str(medmnist_npz(tmp_path / "mine.npz", 3, rgb=False))))
    assert other.classnames == ["class 0", "class 1", "class 2"]
    assert other.train[0][0].mode == "RGB"


def test_medmnist_errors(tmp_path):
    path = medmnist_npz(tmp_path / "pathmnist.npz", 9, drop="val_labels")
    with pytest.raises(DataError, match=r"pathmnist.npz.*val_labels"):
        load_dataset(DatasetSpec("medmnist", "p", str(path)))
    with pytest.raises(DataError, match="multi-label"):
        load_dataset(DatasetSpec("medmnist", "c", str(medmnist_npz(tmp_path / "chestmnist.npz", 2))))
    multi = tmp_path / "multi.npz"
    arrays = dict(np.load(medmnist_npz(tmp_path / "m.npz", 2)))
    arrays["train_labels"] = np.zeros((14, 3), np.uint8)
    np.savez(multi, **arrays)
    with pytest.raises(DataError, match=r"train_labels.*\(14, 3\)"):
        load_dataset(DatasetSpec("medmnist", "m", str(multi)))
    not_npz = tmp_path / "broken.npz"
    not_npz.write_bytes(b"garbage")
    with pytest.raises(DataError, match="broken.npz"):
        load_dataset(DatasetSpec("medmnist", "b", str(not_npz)))


# ---------------------------------------------------------------------------- few-shot, base/novel


def test_few_shot_counts_and_seeding():
    split = array_split([0] * 10 + [1] * 10 + [2] * 10)
    shots = few_shot(split, 4, seed=1)
    assert sorted(shots.labels) == [0] * 4 + [1] * 4 + [2] * 4
    assert len(set(shots.rows)) == 12  # no repeats when the class is large enough
    assert few_shot(split, 4, seed=1).rows == shots.rows
    assert any(few_shot(split, 4, seed=s).rows != shots.rows for s in (2, 3, 4))
    assert all(split.labels[r] == l for r, l in zip(shots.rows, shots.labels))


def test_few_shot_with_replacement_when_short():
    split = array_split([0] * 2 + [1] * 10)
    shots = few_shot(split, 5, seed=0)
    class0 = [r for r, l in zip(shots.rows, shots.labels) if l == 0]
    assert len(class0) == 5 and set(class0) == {0, 1}  # every image used, then repeats
    assert shots.labels.count(1) == 5


def test_few_shot_errors():
    split = array_split([0, 0, 2, 2])
    with pytest.raises(DataError, match="class label 1"):
        few_shot(split, 1, seed=0)
    with pytest.raises(DataError, match=r"class label 3 \('d'\)"):
        few_shot(array_split([0, 1, 2]), 1, seed=0, classnames=["a", "b", "c", "d"])
    with pytest.raises(DataError, match="empty split"):
        few_shot(split.subset([]), 1, seed=0)
    for k in (0, -1, 1.5):
        with pytest.raises(DataError, match="K must be"):
            few_shot(array_split([0, 1]), k, seed=0)


def test_base_novel_split_and_relabel():
    ds = toy_dataset(n_classes=5, per_class=4)
    base, novel = base_novel(ds)
    assert base.classnames == ["class_0", "class_1", "class_2"]
    assert novel.classnames == ["class_3", "class_4"]
    assert (len(base.train), len(novel.train), len(novel.test)) == (12, 8, 8)
    assert sorted(set(novel.train.labels)) == [0, 1]
    # relabelled images are the right ones: row r of the toy array has label r // 4
    assert all(r // 4 == l + 3 for r, l in zip(novel.train.rows, novel.train.labels))
    assert base.name == "toy-base" and novel.name == "toy-novel" and novel.val is None
    with pytest.raises(DataError, match="at least 4"):
        base_novel(toy_dataset(n_classes=3))


def test_subset_classes_uses_given_order():
    sub = toy_dataset(5, 2).subset_classes([4, 1], "-pair")
    assert sub.classnames == ["class_4", "class_1"] and sub.train.labels == [1, 1, 0, 0]
    assert sub.summary() == {
        "name": "toy-pair", "n_classes": 2, "train": 4, "val": None, "test": 4,
        "template": "a photo of a {}.", "description": "",
    }
    with pytest.raises(DataError, match="out of range"):
        toy_dataset(3).subset_classes([0, 7], "-x")
    with pytest.raises(DataError, match="no val split"):
        toy_dataset(3).class_counts("val")


def test_dataset_validates_labels_and_template():
    split = array_split([0, 1, 2])
    with pytest.raises(DataError, match="label 2"):
        ClassificationDataset("d", ["a", "b"], "a {}.", split, None, split)
    with pytest.raises(DataError, match="no '{}'"):
        ClassificationDataset("d", ["a", "b", "c"], "a photo.", split, None, split)


# ---------------------------------------------------------------------------- transforms


def test_transforms_shapes():
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    assert train_transform(32, (0.5,) * 3, (0.5,) * 3)(image).shape == (3, 32, 32)
    out = eval_transform(32)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    ts = TransformedSplit(array_split([0, 1, 1]), eval_transform(16))
    x, y = ts[2]
    assert x.shape == (3, 16, 16) and y == 1 and len(ts) == 3 and ts.labels == [0, 1, 1]
    batch = next(iter(torch.utils.data.DataLoader(ts, batch_size=3)))
    assert batch[0].shape == (3, 3, 16, 16) and batch[1].tolist() == [0, 1, 1]


# ---------------------------------------------------------------------------- DatasetSpec


def test_dataset_spec_round_trip_and_errors():
    spec = DatasetSpec("coop", "OxfordPets", "/data", "a {}.")
    assert DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert DatasetSpec.from_dict({"kind": "builtin", "name": "animal-shape"}).root is None
    with pytest.raises(DataError, match="missing field.*name"):
        DatasetSpec.from_dict({"kind": "builtin"})
    with pytest.raises(DataError, match="unknown field.*colour"):
        DatasetSpec.from_dict({"kind": "builtin", "name": "x", "colour": "red"})
    with pytest.raises(DataError, match="kind 'zip' is unknown"):
        DatasetSpec.from_dict({"kind": "zip", "name": "x"})
    with pytest.raises(DataError, match="unknown built-in"):
        load_dataset(DatasetSpec("builtin", "cifar"))


# ---------------------------------------------------------------------------- built-in datasets

needs_animal_shape = pytest.mark.skipif(animal_shape_dir() is None, reason="animal-shape-mnist is not installed")


@needs_animal_shape
def test_builtin_animal_shape():
    assert "animal-shape" in builtin_datasets()
    ds = load_dataset(DatasetSpec("builtin", "animal-shape"))
    assert ds.classnames == ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6000, 1000, 3000)
    assert set(ds.class_counts("train").values()) == {600} and set(ds.class_counts("test").values()) == {300}
    image, label = ds.test[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (28, 28)
    assert not set(ds.train.rows) & set(ds.test.rows)
    assert "not biomedical" in ds.description.lower()


@needs_animal_shape
def test_animal_shape_checksum_mismatch(tmp_path):
    for f in animal_shape_dir().iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    assert len(load_animal_shape(tmp_path).classnames) == 10  # an untouched copy loads
    tampered = tmp_path / "tampered"
    shutil.copytree(tmp_path, tampered, ignore=shutil.ignore_patterns("tampered"))
    data = bytearray((tampered / "animal_data_version_3.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "animal_data_version_3.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"sha256 mismatch.*animal_data_version_3.gz"):
        load_dataset(DatasetSpec("builtin", "animal-shape", root=str(tampered)))


@pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(), reason=f"{FASHION_MNIST_DIR} missing (apt-get install dataset-fashion-mnist)"
)
def test_builtin_fashion_mnist():
    assert "fashion-mnist" in builtin_datasets()
    ds = load_dataset(DatasetSpec("builtin", "fashion-mnist"))
    assert ds.classnames[0] == "t-shirt/top" and ds.classnames[-1] == "ankle boot"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54000, 6000, 10000)
    assert set(ds.class_counts("val").values()) == {600}
    image, _ = ds.train[0]
    assert image.mode == "RGB" and image.size == (28, 28)
    assert "not biomedical" in ds.description.lower()


def test_fashion_mnist_missing_folder_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(DatasetSpec("builtin", "fashion-mnist", root=str(tmp_path / "none")))


def test_builtin_descriptions_are_honest():
    for name, description in builtin_datasets().items():
        assert "not biomedical" in description.lower() and "\n" not in description, name


# ---- uploads ------------------------------------------------------------------------------------
import io as _io
import zipfile as _zipfile

from clipsvd.data.uploads import extract_zip


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = _io.BytesIO()
    with _zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_extract_zip_returns_the_single_top_folder(tmp_path):
    root = extract_zip(_zip({"pets/cat/1.png": b"x", "pets/dog/1.png": b"y"}), tmp_path / "out")
    assert root == tmp_path / "out" / "pets" and (root / "cat" / "1.png").read_bytes() == b"x"


@pytest.mark.parametrize("name, message", [("../evil.txt", "climbs out"), ("/etc/evil", "absolute path"),
                                           ("a/../../evil", "climbs out")])
def test_extract_zip_refuses_path_traversal(tmp_path, name, message):
    with pytest.raises(DataError, match=message):
        extract_zip(_zip({"ok/a.png": b"1", name: b"2"}), tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


def test_extract_zip_size_and_count_limits(tmp_path):
    with pytest.raises(DataError, match="more than"):
        extract_zip(_zip({"a/1.png": b"0" * 2048}), tmp_path / "o1", max_bytes=1024)
    with pytest.raises(DataError, match="entries"):
        extract_zip(_zip({f"a/{i}.png": b"0" for i in range(5)}), tmp_path / "o2", max_files=3)
    with pytest.raises(DataError, match="not a readable zip"):
        extract_zip(b"not a zip", tmp_path / "o3")
