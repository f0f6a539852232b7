"""Where a dataset comes from, as a small serialisable record stored in run configs."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from clipsvd.choices import DATASET_KINDS
from clipsvd.errors import DataError

KINDS = DATASET_KINDS


@dataclass(frozen=True)
class DatasetSpec:
    """kind: builtin | imagefolder | coop | biomedcoop | medmnist.

    name: builtin name, CoOp/BiomedCoOp dataset name, or a free label (imagefolder, medmnist).
    root: the folder (or .npz file) holding the data; for builtins an optional override of the
    installed files' folder. template: overrides the dataset's own prompt template.
    """

    kind: str
    name: str
    root: str | None = None
    template: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"dataset kind {self.kind!r} is unknown; expected one of {', '.join(KINDS)}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise DataError(f"dataset name must be a non-empty string, got {self.name!r}")
        for key in ("root", "template"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise DataError(f"dataset spec field {key!r} must be a string or null, got {value!r}")
        if self.template is not None and "{}" not in self.template:
            raise DataError(f"template {self.template!r} has no '{{}}' for the class name")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetSpec":
        """Inverse of to_dict; DataError naming any missing or unknown field."""
        if not isinstance(d, dict):
            raise DataError(f"dataset spec must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"dataset spec has unknown field(s) {unknown}; expected {sorted(known)}")
        missing = [k for k in ("kind", "name") if k not in d]
        if missing:
            raise DataError(f"dataset spec is missing field(s) {missing}")
        return cls(**d)
