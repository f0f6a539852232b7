"""ImageFolder layout: root/<class>/<images>, or root/{train,val,test}/<class>/<images>.

Class names are the sorted folder names with '_' shown as ' '. Without train/ the images of each
class are split deterministically 60/20/20 (seed 0). Files that are not images are skipped and
listed in one warning; an empty class folder is an error, since it would silently shift labels.
A root that has a train/ subfolder is read as pre-split (train/ plus optional val/ and test/;
without test/, 20% of each training class is held out as test).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from clipsvd.data.dataset import ClassificationDataset
from clipsvd.data.sampling import split_per_class
from clipsvd.data.splits import IMAGE_EXTENSIONS, FileImageSplit
from clipsvd.data.templates import DEFAULT_TEMPLATE
from clipsvd.errors import DataError

SPLIT_SEED = 0
VAL_FRAC, TEST_FRAC = 0.2, 0.2
_MAX_WARNED = 10


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _class_folders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and _visible(p)), key=lambda p: p.name)


def _images_in(folder: Path, skipped: list[Path]) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted); other files go to ``skipped``."""
    images = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else skipped).append(path)
    return images


def _read_classes(folder: Path, skipped: list[Path]) -> dict[str, list[Path]]:
    """{folder name: image paths} for each class folder; DataError on an empty class folder."""
    out = {}
    for class_dir in _class_folders(folder):
        images = _images_in(class_dir, skipped)
        if not images:
            expected = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DataError(f"class folder {class_dir} holds no images (expected {expected})")
        out[class_dir.name] = images
    skipped.extend(p for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS)
    return out


def _flatten(classes: dict[str, list[Path]], label_of: dict[str, int], where: Path) -> FileImageSplit:
    paths, labels = [], []
    for folder, images in classes.items():
        if folder not in label_of:
            raise DataError(f"class folder {where / folder} has no matching folder in the train split")
        paths += images
        labels += [label_of[folder]] * len(images)
    return FileImageSplit(paths, labels)


def load_imagefolder(root: str | Path, name: str, template: str | None = None) -> ClassificationDataset:
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"image folder root does not exist: {root}")
    if not root.is_dir():
        raise DataError(f"image folder root is not a folder: {root}")
    skipped: list[Path] = []
    presplit = (root / "train").is_dir()
    train_classes = _read_classes(root / "train" if presplit else root, skipped)
    if not train_classes:
        where = root / "train" if presplit else root
        raise DataError(f"no class folders in {where}; expected {where}/<class name>/<images>")
    if len(train_classes) < 2:
        raise DataError(f"only one class folder ({next(iter(train_classes))}) in {root}; a classifier needs at least 2")
    folders = list(train_classes)
    label_of = {folder: i for i, folder in enumerate(folders)}
    everything = _flatten(train_classes, label_of, root)

    if presplit:
        val_dir, test_dir = root / "val", root / "test"
        val = _flatten(_read_classes(val_dir, skipped), label_of, val_dir) if val_dir.is_dir() else None
        val = val if val else None  # an empty val/ is no validation split
        if test_dir.is_dir():
            train, test = everything, _flatten(_read_classes(test_dir, skipped), label_of, test_dir)
            how = "train/, test/ folders"
        else:
            tr, _, te = split_per_class(everything.labels, 0.0, TEST_FRAC, SPLIT_SEED)
            train, test = everything.subset(tr), everything.subset(te)
            how = f"train/ folder, {TEST_FRAC:.0%} of each class held out as test (seed {SPLIT_SEED})"
    else:
        tr, va, te = split_per_class(everything.labels, VAL_FRAC, TEST_FRAC, SPLIT_SEED)
        train, val, test = everything.subset(tr), everything.subset(va) if va else None, everything.subset(te)
        how = f"per-class {1 - VAL_FRAC - TEST_FRAC:.0%}/{VAL_FRAC:.0%}/{TEST_FRAC:.0%} split (seed {SPLIT_SEED})"

    if skipped:
        listed = ", ".join(str(p) for p in skipped[:_MAX_WARNED])
        more = f" and {len(skipped) - _MAX_WARNED} more" if len(skipped) > _MAX_WARNED else ""
        warnings.warn(
            f"ignored {len(skipped)} file(s) under {root} that are not images in a class folder: {listed}{more}"
        )
    if len(test) == 0:
        raise DataError(f"{root}: no test images (each class needs at least 2 images to hold one out)")
    return ClassificationDataset(
        name=name,
        classnames=[f.replace("_", " ") for f in folders],
        template=template or DEFAULT_TEMPLATE,
        train=train,
        val=val,
        test=test,
        description=f"Image folder {root} ({how}).",
    )
