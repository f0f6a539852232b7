"""MedMNIST v2 .npz files (train/val/test images and labels, 28x28 or the MedMNIST+ sizes).

Class names come from MedMNIST's INFO table when the file name matches a 2-D dataset
(e.g. dermamnist.npz, dermamnist_224.npz); otherwise "class 0", "class 1", ...
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from clipsvd.data.dataset import ClassificationDataset
from clipsvd.data.splits import ArrayImageSplit
from clipsvd.data.templates import DEFAULT_TEMPLATE
from clipsvd.errors import DataError

_ORGANS = [
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
    "liver", "lung-left", "lung-right", "pancreas", "spleen",
]

# Label names of medmnist.INFO (MedMNIST v2). RetinaMNIST's official names are the bare grades
# "0".."4"; they are spelled out here so that prompts mean something to CLIP.
MEDMNIST_CLASSNAMES: dict[str, list[str]] = {
    "pathmnist": [
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
        "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium",
    ],
    "dermamnist": [
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions",
    ],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": [f"diabetic retinopathy grade {g}" for g in range(5)],
    "breastmnist": ["malignant", "normal, benign"],
    "bloodmnist": [
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
        "lymphocyte", "monocyte", "neutrophil", "platelet",
    ],
    "tissuemnist": [
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
        "Thick Ascending Limb",
    ],
    "organamnist": _ORGANS,
    "organcmnist": _ORGANS,
    "organsmnist": _ORGANS,
}
MULTI_LABEL = {"chestmnist"}
SPLITS = ("train", "val", "test")


def medmnist_key(path: Path) -> str:
    """'dermamnist' for dermamnist.npz and MedMNIST+'s dermamnist_224.npz."""
    return re.sub(r"_\d+$", "", path.stem.lower())


def _labels(path: Path, key: str, labels: np.ndarray, n_images: int) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(
            f"{path}: '{key}' has shape {labels.shape}; expected (N,) or (N, 1) "
            "(multi-label data such as ChestMNIST cannot be used for single-label classification)"
        )
    if len(labels) != n_images:
        raise DataError(f"{path}: '{key}' has {len(labels)} labels but there are {n_images} images")
    if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
        raise DataError(f"{path}: '{key}' must hold non-negative integers, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def load_medmnist(root: str | Path, name: str, template: str | None = None) -> ClassificationDataset:
    path = Path(root).expanduser()
    key = medmnist_key(path)
    if key in MULTI_LABEL:
        raise DataError(f"{path}: {key} is multi-label; only single-label MedMNIST sets are supported")
    if not path.is_file():
        raise DataError(f"MedMNIST file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in npz.files]
            if missing:
                raise DataError(f"{path} has no key(s) {missing}; found {sorted(npz.files)}")
            arrays = {k: npz[k] for k in (f"{s}_{t}" for s in SPLITS for t in ("images", "labels"))}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read MedMNIST file {path}: {exc}") from exc
    splits, max_label = {}, -1
    for s in SPLITS:
        images = arrays[f"{s}_images"]
        labels = _labels(path, f"{s}_labels", arrays[f"{s}_labels"], len(images))
        max_label = max(max_label, int(labels.max()) if len(labels) else -1)
        splits[s] = ArrayImageSplit(images, labels.tolist(), f"{path.name}:{s}_images")
    classnames = MEDMNIST_CLASSNAMES.get(key) or [f"class {i}" for i in range(max_label + 1)]
    if max_label >= len(classnames):
        raise DataError(f"{path}: label {max_label} exceeds the {len(classnames)} classes of {key}")
    known = "MedMNIST's label names" if key in MEDMNIST_CLASSNAMES else "generic class names"
    return ClassificationDataset(
        name=name,
        classnames=list(classnames),
        template=template or DEFAULT_TEMPLATE,
        train=splits["train"],
        val=splits["val"] or None,
        test=splits["test"],
        description=f"MedMNIST file {path} (official train/val/test split, {known}).",
    )
