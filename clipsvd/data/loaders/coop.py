"""The 11 natural datasets and ImageNet's four test-only variants in CoOp's DATA layout
(github.com/KaiyangZhou/CoOp, DATASETS.md).

``root`` is the DATA folder holding one folder per dataset (or the dataset folder itself).
Nine datasets read ``split_zhou_<Name>.json``; FGVC-Aircraft reads its variant lists, ImageNet and its
variants their class folders and ``classnames.txt``, exactly as CoOp's dataset classes do
(datasets/imagenet*.py at ff61507c): ImageNet-V2's folders are the labels 0..999 in classnames.txt's order;
ImageNet-Sketch, -A and -R label their sorted wnid folders 0..n-1, so -A and -R become 200-class problems over
the classes they hold.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipsvd.data.dataset import ClassificationDataset
from clipsvd.data.loaders.splitfile import build_split, check_files_exist, classnames_from_entries, read_split_json
from clipsvd.data.splits import IMAGE_EXTENSIONS, FileImageSplit
from clipsvd.data.templates import TEMPLATES
from clipsvd.errors import DataError


@dataclass(frozen=True)
class CoopLayout:
    dataset_dir: str
    image_dir: str  # relative to dataset_dir; "" = dataset_dir itself
    split_file: str | None  # None: FGVC-Aircraft and ImageNet build their splits from other files
    classes: int  # how many classes the dataset has (cost estimates before any data is read)
    test_only: bool = False  # ImageNet's variants: evaluation targets, never a training source


COOP_DATASETS: dict[str, CoopLayout] = {
    "Caltech101": CoopLayout("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", 100),
    "DescribableTextures": CoopLayout("dtd", "images", "split_zhou_DescribableTextures.json", 47),
    "EuroSAT": CoopLayout("eurosat", "2750", "split_zhou_EuroSAT.json", 10),
    "FGVCAircraft": CoopLayout("fgvc_aircraft", "images", None, 100),
    "Food101": CoopLayout("food-101", "images", "split_zhou_Food101.json", 101),
    "ImageNet": CoopLayout("imagenet", "images", None, 1000),
    "ImageNetV2": CoopLayout("imagenetv2", "imagenetv2-matched-frequency-format-val", None, 1000, True),
    "ImageNetSketch": CoopLayout("imagenet-sketch", "images", None, 1000, True),
    "ImageNetA": CoopLayout("imagenet-adversarial", "imagenet-a", None, 200, True),
    "ImageNetR": CoopLayout("imagenet-rendition", "imagenet-r", None, 200, True),
    "OxfordFlowers": CoopLayout("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", 102),
    "OxfordPets": CoopLayout("oxford_pets", "images", "split_zhou_OxfordPets.json", 37),
    "StanfordCars": CoopLayout("stanford_cars", "", "split_zhou_StanfordCars.json", 196),
    "SUN397": CoopLayout("sun397", "SUN397", "split_zhou_SUN397.json", 397),
    "UCF101": CoopLayout("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", 101),
}
# The names of CoOp's / CLIP-SVD's dataset configs (configs/datasets/*.yaml) and the papers' table headings.
_ALIASES = {"dtd": "DescribableTextures", "imagenet_sketch": "ImageNetSketch", "imagenet-s": "ImageNetSketch",
            "imagenet_a": "ImageNetA", "imagenet-a": "ImageNetA", "imagenet_r": "ImageNetR",
            "imagenet-r": "ImageNetR", "imagenet-v2": "ImageNetV2"}
IMAGENET_VARIANTS = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")
CLASSNAMES_FILE = "classnames.txt"


def _expected(layout: CoopLayout) -> str:
    """What CoOp's DATASETS.md asks for, for a message about a missing folder or file."""
    inside = [f"{layout.image_dir}/" if layout.image_dir else "the images",
              layout.split_file or (CLASSNAMES_FILE if layout.dataset_dir.startswith("imagenet") else
                                    "variants.txt and images_variant_{train,val,test}.txt")]
    return f"CoOp's DATASETS.md puts {' and '.join(inside)} in <data root>/{layout.dataset_dir}/"


def available_coop(root: str | Path) -> list[str]:
    """CoOp's names of the datasets whose folder (DATASETS.md's name) is under ``root``, in COOP_DATASETS' order:
    what a targets list can offer without reading any images."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    return [name for name, layout in COOP_DATASETS.items() if (root / layout.dataset_dir).is_dir()]


def expected_folder(name: str) -> str:
    """Where CoOp's DATASETS.md puts a dataset, for a message about one that is not under the data root."""
    return _expected(COOP_DATASETS[canonical_coop_name(name)])


def canonical_coop_name(name: str) -> str:
    """Accept CoOp's class name ("OxfordPets"), its folder name ("oxford_pets") or "DTD", any case."""
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    for canonical, layout in COOP_DATASETS.items():
        if key in (canonical.lower(), layout.dataset_dir.lower()):
            return canonical
    raise DataError(f"unknown CoOp dataset {name!r}; expected one of {', '.join(COOP_DATASETS)}")


def _dataset_dir(root: Path, layout: CoopLayout) -> Path:
    if not root.is_dir():
        raise DataError(f"CoOp data root does not exist or is not a folder: {root}")
    candidate = root / layout.dataset_dir
    if candidate.is_dir():
        return candidate
    if root.name == layout.dataset_dir or (layout.split_file and (root / layout.split_file).is_file()):
        return root  # the user pointed at the dataset folder itself
    raise DataError(f"CoOp dataset folder not found: {candidate} ({_expected(layout)})")


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _fgvc_aircraft(ddir: Path, image_dir: Path) -> tuple[list[str], dict[str, FileImageSplit]]:
    classnames = _read_lines(ddir / "variants.txt")
    label_of = {c: i for i, c in enumerate(classnames)}
    splits = {}
    for split in ("train", "val", "test"):
        listing = ddir / f"images_variant_{split}.txt"
        paths, labels = [], []
        for n, line in enumerate(_read_lines(listing), 1):
            image_id, _, variant = line.partition(" ")
            if variant not in label_of:
                raise DataError(f"{listing}, line {n}: variant {variant!r} is not in {ddir / 'variants.txt'}")
            paths.append(image_dir / f"{image_id}.jpg")
            labels.append(label_of[variant])
        splits[split] = FileImageSplit(paths, labels)
    return classnames, splits


def read_imagenet_classnames(path: Path) -> dict[str, str]:
    """CoOp's ImageNet.read_classnames: `<wnid> <class name>` per line, in file order (CLIP's class names)."""
    name_of: dict[str, str] = {}
    for n, line in enumerate(_read_lines(path), 1):
        wnid, _, classname = line.partition(" ")
        if not classname.strip():
            raise DataError(f"{path}, line {n}: expected '<folder> <class name>', got {line!r}")
        name_of[wnid] = classname.strip()
    return name_of


def _class_folders(image_dir: Path, what: str) -> list[Path]:
    if not image_dir.is_dir():
        raise DataError(f"{what} image folder not found: {image_dir}")
    return sorted((p for p in image_dir.iterdir() if p.is_dir()), key=lambda p: p.name)


def _images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)


def _imagenet_variant(name: str, ddir: Path, image_dir: Path) -> tuple[list[str], dict[str, FileImageSplit]]:
    """A test-only variant as CoOp reads it: V2 by label folders 0..n-1 in classnames.txt's order; Sketch, -A and
    -R by their sorted wnid folders, labelled 0..n-1 (README.txt and other files ignored), so ImageNet-A/R's 200
    folders become their own 200 classes, named from classnames.txt."""
    names_file = ddir / CLASSNAMES_FILE
    name_of = read_imagenet_classnames(names_file)
    paths: list[Path] = []
    labels: list[int] = []
    if name == "ImageNetV2":
        if not image_dir.is_dir():
            raise DataError(f"ImageNetV2 image folder not found: {image_dir}")
        classnames = list(name_of.values())
        for label in range(len(classnames)):
            folder = image_dir / str(label)
            if not folder.is_dir():
                raise DataError(f"ImageNetV2 folder {folder} missing: CoOp reads one folder per label 0.."
                                f"{len(classnames) - 1} of {names_file}")
            files = _images(folder)
            paths += files
            labels += [label] * len(files)
    else:
        folders = _class_folders(image_dir, name)
        unnamed = [f.name for f in folders if f.name not in name_of]
        if unnamed:
            raise DataError(f"{names_file} has no class name for folder(s) {unnamed[:10]} of {image_dir}")
        classnames = [name_of[f.name] for f in folders]
        for label, folder in enumerate(folders):
            files = _images(folder)
            paths += files
            labels += [label] * len(files)
    data = FileImageSplit(paths, labels)
    return classnames, {"train": data, "test": data}


def _imagenet(ddir: Path, image_dir: Path) -> tuple[list[str], dict[str, FileImageSplit]]:
    names_file = ddir / CLASSNAMES_FILE
    name_of = read_imagenet_classnames(names_file)
    train_dir = image_dir / "train"
    if not train_dir.is_dir():
        raise DataError(f"ImageNet train folder not found: {train_dir}")
    wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    unnamed = [w for w in wnids if w not in name_of]
    if unnamed:
        raise DataError(f"{names_file} has no class name for folder(s) {unnamed[:10]} of {train_dir}")
    label_of = {w: i for i, w in enumerate(wnids)}
    splits = {}
    # CoOp evaluates on ImageNet's val images (its "test"); there is no separate val split.
    for split, folder in (("train", "train"), ("test", "val")):
        paths, labels = [], []
        split_dir = image_dir / folder
        if not split_dir.is_dir():
            raise DataError(f"ImageNet {folder} folder not found: {split_dir}")
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if class_dir.name not in label_of:
                raise DataError(f"ImageNet folder {class_dir} has no matching folder in {train_dir}")
            files = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            paths += files
            labels += [label_of[class_dir.name]] * len(files)
        splits[split] = FileImageSplit(paths, labels)
    return [name_of[w] for w in wnids], splits


def load_coop(root: str | Path, name: str, template: str | None = None) -> ClassificationDataset:
    canonical = canonical_coop_name(name)
    layout = COOP_DATASETS[canonical]
    ddir = _dataset_dir(Path(root).expanduser(), layout)
    image_dir = ddir / layout.image_dir if layout.image_dir else ddir
    if canonical == "FGVCAircraft":
        classnames, splits = _fgvc_aircraft(ddir, image_dir)
    elif canonical == "ImageNet":
        classnames, splits = _imagenet(ddir, image_dir)
    elif layout.test_only:
        classnames, splits = _imagenet_variant(canonical, ddir, image_dir)
    else:
        split_path = ddir / layout.split_file
        entries = read_split_json(split_path)
        classnames = classnames_from_entries(f"split file {split_path}", entries)
        splits = {s: build_split(e, lambda rel: image_dir / rel) for s, e in entries.items()}
    for split_name, split in splits.items():
        check_files_exist(f"CoOp {canonical} {split_name} split", split)
    return ClassificationDataset(
        name=canonical,
        classnames=classnames,
        template=template or TEMPLATES[canonical],
        train=splits["train"],
        val=splits.get("val") or None,
        test=splits["test"],
        description=(f"CoOp {canonical} from {ddir} (test only: CoOp's train split is its test images)."
                     if layout.test_only else f"CoOp {canonical} from {ddir} (CoOp's fixed train/val/test split)."),
    )
