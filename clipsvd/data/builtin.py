"""Datasets whose files ship with installed packages, so the app works with no download.

Neither is biomedical: no real biomedical classification dataset ships offline. Users point a
data root at their BiomedCoOp or MedMNIST files for that. Arrays are read once per process.
"""
from __future__ import annotations

import gzip
import importlib.util
import pickle
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from clipsvd.checksums import sha256_of
from clipsvd.data.dataset import ClassificationDataset
from clipsvd.data.sampling import split_per_class
from clipsvd.data.splits import ArrayImageSplit
from clipsvd.data.templates import DEFAULT_TEMPLATE
from clipsvd.data.world import describe_world, load_world, world_dataset_names
from clipsvd.errors import DataError

SPLIT_SEED = 0
NOT_BIOMEDICAL = (
    "Not biomedical images: no real biomedical dataset ships offline; "
    "point a data root at your BiomedCoOp or MedMNIST files for that."
)

# --- Animal Shape MNIST (PyPI animal-shape-mnist 0.39) -------------------------------------------

ANIMAL_SHAPE_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
ANIMAL_SHAPE_FILES = {  # file name -> sha256 of the gzipped pickle, checked before unpickling
    "animal_data_version_3.gz": "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    "animal_label_version_3.gz": "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
}
ANIMAL_SHAPE_DESCRIPTION = (
    "Animal Shape MNIST (PyPI animal-shape-mnist 0.39, MIT): 10 animal silhouettes, 28x28 grey, "
    "600/100/300 train/val/test per class (seed 0); template 'a photo of a {}.' kept for CLIP parity. "
    + NOT_BIOMEDICAL
)


def animal_shape_dir() -> Path | None:
    """Folder of the package's data files. Its __init__ is misspelled, so it is a namespace package."""
    try:
        spec = importlib.util.find_spec("animal_shape_mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data" / "Animal Shape"
        if folder.is_dir():
            return folder
    return None


@lru_cache(maxsize=4)
def read_animal_shape(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N,28,28) uint8, labels (N,) int64), read-only. Checksums are verified before unpickling:
    pickle can run code, so a file that is not the published one is never loaded."""
    arrays = []
    for filename, expected in ANIMAL_SHAPE_FILES.items():
        path = data_dir / filename
        if not path.is_file():
            raise DataError(f"Animal Shape file not found: {path} (pip install animal-shape-mnist==0.39)")
        actual = sha256_of(path)
        if actual != expected:
            raise DataError(f"sha256 mismatch for {path}: expected {expected}, got {actual}; refusing to unpickle it")
        try:
            with gzip.open(path, "rb") as f:
                arrays.append(np.asarray(pickle.load(f)))
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
    images, labels = arrays
    if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{data_dir}: unexpected array layout {images.shape} {images.dtype} / {labels.shape}")
    labels = labels.astype(np.int64)
    for a in (images, labels):
        a.setflags(write=False)
    return images, labels


def load_animal_shape(data_dir: str | Path | None = None, template: str | None = None) -> ClassificationDataset:
    """10 classes x 1000 silhouettes; labels 0..9 are the class names in alphabetical order
    (checked by eye against the images). Split per class 60/10/30 with seed 0 -> 600/100/300."""
    folder = Path(data_dir).expanduser() if data_dir else animal_shape_dir()
    if folder is None:
        raise DataError("Animal Shape data not found: pip install animal-shape-mnist==0.39")
    images, labels = read_animal_shape(folder.resolve())
    tr, va, te = split_per_class(labels.tolist(), 0.1, 0.3, SPLIT_SEED)
    name = "animal-shape"
    return ClassificationDataset(
        name=name,
        classnames=list(ANIMAL_SHAPE_CLASSES),
        template=template or DEFAULT_TEMPLATE,
        train=ArrayImageSplit(images, labels[tr].tolist(), name, rows=tr),
        val=ArrayImageSplit(images, labels[va].tolist(), name, rows=va),
        test=ArrayImageSplit(images, labels[te].tolist(), name, rows=te),
        description=ANIMAL_SHAPE_DESCRIPTION,
    )


# --- Fashion-MNIST (Debian dataset-fashion-mnist) ------------------------------------------------

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_DESCRIPTION = (
    "Fashion-MNIST (Zalando, MIT; Debian dataset-fashion-mnist): 10 clothing classes, 28x28 grey; "
    "train 54,000 / val 6,000 (10% of each class of the official train set, seed 0) / test 10,000. "
    + NOT_BIOMEDICAL
)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x0000 08 <ndim>, then big-endian int32 dims)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"Fashion-MNIST file not found: {path} (apt-get install dataset-fashion-mnist)") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, 8, ndim]):
        raise DataError(f"{path} is not an IDX file of {ndim}-D unsigned bytes")
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    if len(raw) - header != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


@lru_cache(maxsize=4)
def read_fashion_mnist(data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images, labels), 'test': (images, labels)}, read-only arrays."""
    if not data_dir.is_dir():
        raise DataError(f"Fashion-MNIST folder not found: {data_dir} (apt-get install dataset-fashion-mnist)")
    out = {}
    for split, (image_file, label_file) in FASHION_MNIST_FILES.items():
        images, labels = _read_idx(data_dir / image_file, 3), _read_idx(data_dir / label_file, 1)
        if len(images) != len(labels):
            raise DataError(f"{data_dir}: {len(images)} {split} images but {len(labels)} labels")
        out[split] = (images, labels.astype(np.int64))
    return out


def load_fashion_mnist(data_dir: str | Path | None = None, template: str | None = None) -> ClassificationDataset:
    arrays = read_fashion_mnist(Path(data_dir or FASHION_MNIST_DIR).expanduser().resolve())
    train_images, train_labels = arrays["train"]
    test_images, test_labels = arrays["test"]
    # Hold out 10% of each class of the official train set as val (returned in the "test" slot).
    tr, _, va = split_per_class(train_labels.tolist(), 0.0, 0.1, SPLIT_SEED)
    name = "fashion-mnist"
    return ClassificationDataset(
        name=name,
        classnames=list(FASHION_MNIST_CLASSES),
        template=template or DEFAULT_TEMPLATE,
        train=ArrayImageSplit(train_images, train_labels[tr].tolist(), f"{name}:train", rows=tr),
        val=ArrayImageSplit(train_images, train_labels[va].tolist(), f"{name}:train", rows=va),
        test=ArrayImageSplit(test_images, test_labels.tolist(), f"{name}:test"),
        description=FASHION_MNIST_DESCRIPTION,
    )


# --- registry ------------------------------------------------------------------------------------

BUILTIN_LOADERS = {"animal-shape": load_animal_shape, "fashion-mnist": load_fashion_mnist}


def _world_loader(name: str):
    def load(root: str | Path | None = None, template: str | None = None) -> ClassificationDataset:
        if root is not None:
            raise DataError(f"{name} is generated, not read from files; got a data root {root!r}")
        return load_world(name, template)
    return load


BUILTIN_LOADERS.update({name: _world_loader(name) for name in world_dataset_names()})


def builtin_datasets() -> dict[str, str]:
    """Name -> one-line description of the built-in datasets available on this machine (generated
    world datasets always are; the others need their package's files)."""
    out = {name: describe_world(name) for name in world_dataset_names()}
    folder = animal_shape_dir()
    if folder is not None and all((folder / f).is_file() for f in ANIMAL_SHAPE_FILES):
        out["animal-shape"] = ANIMAL_SHAPE_DESCRIPTION
    if all((FASHION_MNIST_DIR / f).is_file() for files in FASHION_MNIST_FILES.values() for f in files):
        out["fashion-mnist"] = FASHION_MNIST_DESCRIPTION
    return out


def load_builtin(name: str, root: str | None = None, template: str | None = None) -> ClassificationDataset:
    """A built-in dataset by name; ``root`` optionally points at a copy of its files."""
    if name not in BUILTIN_LOADERS:
        raise DataError(f"unknown built-in dataset {name!r}; expected one of {', '.join(BUILTIN_LOADERS)}")
    return BUILTIN_LOADERS[name](root, template)
