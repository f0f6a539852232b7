"""Data layer: labelled image splits, dataset loaders (ImageFolder, CoOp, BiomedCoOp, MedMNIST,
built-ins), few-shot sampling, base-to-novel splits, prompt templates and CLIP transforms."""
from clipsvd.data.builtin import builtin_datasets, load_animal_shape, load_fashion_mnist
from clipsvd.data.dataset import ClassificationDataset, base_novel
from clipsvd.data.loaders import canonical_dataset_name, datasets_beside, guess_kind, is_test_only, known_class_count, load_dataset
from clipsvd.data.sampling import few_shot
from clipsvd.data.spec import DatasetSpec
from clipsvd.data.splits import IMAGE_EXTENSIONS, ArrayImageSplit, FileImageSplit, ImageSplit
from clipsvd.data.templates import DEFAULT_TEMPLATE, TEMPLATES, template_for
from clipsvd.data.transforms import CLIP_MEAN, CLIP_STD, TransformedSplit, eval_transform, train_transform
from clipsvd.data.uploads import extract_zip

__all__ = [
    "ArrayImageSplit", "CLIP_MEAN", "CLIP_STD", "ClassificationDataset", "DEFAULT_TEMPLATE", "DatasetSpec",
    "FileImageSplit", "IMAGE_EXTENSIONS", "ImageSplit", "TEMPLATES", "TransformedSplit", "base_novel", "canonical_dataset_name", "datasets_beside", "guess_kind", "is_test_only", "known_class_count",
    "builtin_datasets", "eval_transform", "extract_zip", "few_shot", "load_animal_shape", "load_dataset", "load_fashion_mnist",
    "template_for", "train_transform",
]
