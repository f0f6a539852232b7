"""Dispatch from a DatasetSpec to the loader of its layout."""
from __future__ import annotations

from clipsvd.data.builtin import builtin_datasets, load_builtin
from clipsvd.data.dataset import ClassificationDataset
from clipsvd.data.loaders.biomedcoop import BIOMEDCOOP_CLASSES, available_biomedcoop, load_biomedcoop
from clipsvd.data.loaders.coop import COOP_DATASETS, available_coop, canonical_coop_name, load_coop
from clipsvd.data.loaders.imagefolder import load_imagefolder
from clipsvd.data.loaders.medmnist import load_medmnist
from clipsvd.data.spec import DatasetSpec
from clipsvd.errors import DataError

_ROOTED = {
    "imagefolder": load_imagefolder,
    "coop": load_coop,
    "biomedcoop": load_biomedcoop,
    "medmnist": load_medmnist,
}


def load_dataset(spec: DatasetSpec) -> ClassificationDataset:
    """Build the dataset a spec describes; DataError with the offending path on any problem."""
    if spec.kind == "builtin":
        return load_builtin(spec.name, spec.root, spec.template)
    if not spec.root:
        raise DataError(f"a {spec.kind} dataset needs 'root' (the data folder or file)")
    return _ROOTED[spec.kind](spec.root, spec.name, spec.template)


def canonical_dataset_name(spec: DatasetSpec) -> str:
    """The name official presets and published tables use: CoOp's class name for CoOp data ("dtd" ->
    "DescribableTextures"), the folder name for BiomedCoOp data, the given name otherwise."""
    return canonical_coop_name(spec.name) if spec.kind == "coop" else spec.name


def known_class_count(spec: DatasetSpec) -> int | None:
    """Classes of a CoOp or BiomedCoOp dataset without reading it (for cost estimates); None for others."""
    if spec.kind == "coop":
        return COOP_DATASETS[canonical_coop_name(spec.name)].classes
    return BIOMEDCOOP_CLASSES.get(spec.name) if spec.kind == "biomedcoop" else None


def is_test_only(spec: DatasetSpec) -> bool:
    """Whether a dataset exists only to be tested on (ImageNet's variants in CoOp's layout: no train split)."""
    if spec.kind != "coop":
        return False
    try:
        return COOP_DATASETS[canonical_coop_name(spec.name)].test_only
    except DataError:
        return False  # an unknown name is reported by the loader, with the expected names


def datasets_beside(spec: DatasetSpec) -> list[str]:
    """Names of the datasets of the same kind and root as `spec` found on this machine (CoOp folders under the
    data root, BiomedCoOp folders with their split file, the built-ins): the datasets a transfer run can be scored
    on. Other kinds hold one dataset per root, so none."""
    if spec.kind == "builtin":
        return list(builtin_datasets())
    if spec.kind == "coop" and spec.root:
        return available_coop(spec.root)
    if spec.kind == "biomedcoop" and spec.root:
        return available_biomedcoop(spec.root)
    return []


def guess_kind(name: str) -> str:
    """The layout a bare dataset name belongs to: a CoOp name, a BiomedCoOp name, else a built-in."""
    try:
        canonical_coop_name(name)
        return "coop"
    except DataError:
        return "biomedcoop" if name in BIOMEDCOOP_CLASSES else "builtin"


__all__ = ["canonical_dataset_name", "datasets_beside", "guess_kind", "is_test_only", "known_class_count", "load_dataset", "load_imagefolder", "load_coop", "load_biomedcoop", "load_medmnist", "load_builtin"]
