"""A classification dataset: class names, a prompt template and the three splits."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from clipsvd.data.splits import ImageSplit
from clipsvd.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


def _relabel(split: ImageSplit, mapping: dict[int, int]) -> ImageSplit:
    """Keep the images whose label is in ``mapping`` and give them the mapped label."""
    keep = [i for i, label in enumerate(split.labels) if label in mapping]
    out = split.subset(keep)
    out.labels = [mapping[label] for label in out.labels]
    return out


@dataclass
class ClassificationDataset:
    """Everything a method needs: classnames[label], the prompt template, and train/val/test splits."""

    name: str
    classnames: list[str]
    template: str
    train: ImageSplit
    val: ImageSplit | None
    test: ImageSplit
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.classnames) < 2:
            raise DataError(
                f"dataset {self.name!r} has {len(self.classnames)} class(es); a classifier needs at least 2"
            )
        try:
            filled = self.template.format("x")
        except (IndexError, KeyError, ValueError) as exc:
            raise DataError(f"dataset {self.name!r}: template {self.template!r} is not usable: {exc}") from exc
        if filled == self.template:
            raise DataError(f"dataset {self.name!r}: template {self.template!r} has no '{{}}' for the class name")
        for split_name in SPLIT_NAMES:
            split = getattr(self, split_name)
            if split is None:
                continue
            if split.labels and max(split.labels) >= len(self.classnames):
                raise DataError(
                    f"dataset {self.name!r}: {split_name} split has label {max(split.labels)} "
                    f"but only {len(self.classnames)} class names"
                )

    def prompts(self, templates: Sequence[str] = ()) -> list[str | tuple[str, ...]]:
        """One prompt per class, in label order (underscores in class names become spaces).

        With several templates each class gets a tuple, one prompt per template: an ensemble that
        LoadedModel.encode_text averages. No templates: the dataset's own.
        """
        templates = list(templates) or [self.template]
        names = [c.replace("_", " ") for c in self.classnames]
        if len(templates) == 1:
            return [templates[0].format(name) for name in names]
        return [tuple(template.format(name) for template in templates) for name in names]

    def split(self, split: str) -> ImageSplit:
        """The split called 'train', 'val' or 'test'; DataError if unknown or absent."""
        if split not in SPLIT_NAMES:
            raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_NAMES)}")
        out = getattr(self, split)
        if out is None:
            raise DataError(f"dataset {self.name!r} has no {split} split")
        return out

    def class_counts(self, split: str = "train") -> dict[str, int]:
        """Images per class name in label order, zeros included (shows imbalance and empty classes)."""
        counts = [0] * len(self.classnames)
        for label in self.split(split).labels:
            counts[label] += 1
        return dict(zip(self.classnames, counts))

    def summary(self) -> dict:
        """Plain dict for the UI and run logs: name, n_classes, train/val/test sizes (val None if absent)."""
        return {
            "name": self.name,
            "n_classes": len(self.classnames),
            "train": len(self.train),
            "val": None if self.val is None else len(self.val),
            "test": len(self.test),
            "template": self.template,
            "description": self.description,
        }

    def subset_classes(self, labels: Sequence[int], name_suffix: str) -> "ClassificationDataset":
        """Only the given classes, relabelled 0..n-1 in the order given."""
        labels = [int(label) for label in labels]
        if not labels:
            raise DataError(f"dataset {self.name!r}: subset_classes needs at least one label")
        if len(set(labels)) != len(labels):
            raise DataError(f"dataset {self.name!r}: subset_classes got repeated labels {labels}")
        bad = [label for label in labels if not 0 <= label < len(self.classnames)]
        if bad:
            raise DataError(f"dataset {self.name!r}: labels {bad} out of range 0..{len(self.classnames) - 1}")
        mapping = {old: new for new, old in enumerate(labels)}
        return ClassificationDataset(
            name=f"{self.name}{name_suffix}",
            classnames=[self.classnames[label] for label in labels],
            template=self.template,
            train=_relabel(self.train, mapping),
            val=None if self.val is None else _relabel(self.val, mapping),
            test=_relabel(self.test, mapping),
            description=self.description,
        )


def base_novel(dataset: ClassificationDataset) -> tuple[ClassificationDataset, ClassificationDataset]:
    """CoOp's base-to-novel protocol: base = first ceil(n/2) labels, novel = the rest, each from 0."""
    n = len(dataset.classnames)
    if n < 4:
        raise DataError(f"dataset {dataset.name!r} has {n} classes; base-to-novel needs at least 4 (2 per half)")
    m = math.ceil(n / 2)
    return (
        dataset.subset_classes(range(m), "-base"),
        dataset.subset_classes(range(m, n), "-novel"),
    )
