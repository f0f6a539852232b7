"""Dispatch from a DatasetSpec to the loader of its layout."""
from __future__ import annotations

from clipsvd.data.builtin import load_builtin
from clipsvd.data.dataset import ClassificationDataset
from clipsvd.data.loaders.biomedcoop import load_biomedcoop
from clipsvd.data.loaders.coop import canonical_coop_name, load_coop
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


__all__ = ["canonical_dataset_name", "load_dataset", "load_imagefolder", "load_coop", "load_biomedcoop", "load_medmnist", "load_builtin"]
