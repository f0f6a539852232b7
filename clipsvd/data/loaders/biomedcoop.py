"""BiomedCoOp's layout: <root>/<Name>/split_<Name>.json with images under <root>/<Name>/<Name>/.

Labels in these files are not alphabetical, so class names are taken per label from the JSON.
Relative paths that do not resolve under the inner <Name>/ folder are tried under <root>/<Name>/.
"""
from __future__ import annotations

from pathlib import Path

from clipsvd.data.dataset import ClassificationDataset
from clipsvd.data.loaders.splitfile import build_split, classnames_from_entries, read_split_json
from clipsvd.data.splits import listed
from clipsvd.data.templates import template_for
from clipsvd.errors import DataError

BIOMEDCOOP_DATASETS = (
    "BTMRI", "BUSI", "CHMNIST", "COVID-QU-Ex", "CTKidney", "DermaMNIST",
    "KneeXray", "Kvasir", "LungColon", "OCTMNIST", "RETINA",
)
# Classes per dataset, from the split files of HealthX-Lab/CLIP-SVD (configs and datasets/*.py); the CLIP-SVD
# repository calls COVID-QU-Ex's folder COVID_19. Used for cost estimates before any data is read.
BIOMEDCOOP_CLASSES = {"BTMRI": 4, "BUSI": 3, "CHMNIST": 8, "COVID-QU-Ex": 4, "COVID_19": 4, "CTKidney": 4,
                      "DermaMNIST": 7, "KneeXray": 5, "Kvasir": 8, "LungColon": 5, "OCTMNIST": 4, "RETINA": 4}


def available_biomedcoop(root: str | Path) -> list[str]:
    """Dataset folders under ``root`` that hold their split_<Name>.json."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / f"split_{p.name}.json").is_file())


def _resolver(ddir: Path, inner: Path, missing: list[str]):
    def resolve(rel: str) -> Path:
        first = inner / rel
        if first.is_file():
            return first
        second = ddir / rel
        if not second.is_file():
            missing.append(f"{first} (nor {second})")
        return second
    return resolve


def load_biomedcoop(root: str | Path, name: str, template: str | None = None) -> ClassificationDataset:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"BiomedCoOp data root does not exist or is not a folder: {root}")
    ddir = root / name
    if not ddir.is_dir():
        if root.name == name and (root / f"split_{name}.json").is_file():
            ddir = root  # the user pointed at the dataset folder itself
        else:
            found = available_biomedcoop(root)
            hint = f"; found {', '.join(found)}" if found else ""
            raise DataError(f"BiomedCoOp dataset folder not found: {ddir}{hint}")
    split_path = ddir / f"split_{name}.json"
    entries = read_split_json(split_path)
    classnames = classnames_from_entries(f"split file {split_path}", entries)
    splits = {}
    for split_name, split_entries in entries.items():
        missing: list[str] = []
        splits[split_name] = build_split(split_entries, _resolver(ddir, ddir / name, missing))
        if missing:
            raise DataError(
                f"split file {split_path}, '{split_name}': {len(missing)} image(s) not found:\n  {listed(missing)}"
            )
    return ClassificationDataset(
        name=name,
        classnames=classnames,
        template=template or template_for(name),
        train=splits["train"],
        val=splits["val"] or None,
        test=splits["test"],
        description=f"BiomedCoOp {name} from {ddir} (BiomedCoOp's fixed split; class names from the split file).",
    )
