"""Published tables as package data (clipsvd/reproduce/tables/*.json), each number with its source.

A table names the grid the paper ran (protocol, backbone, data layout, datasets, K, seeds, our methods) and the
numbers it published, row by row; a row's `method` is our registry name, or null for a *reference row* (a method
this package does not implement: shown beside ours, never run). Only averages over datasets could be read
offline (the official READMEs); per-dataset cells are absent and the comparison says so (`per_dataset`), it
never fills them in.

Shipped: CLIP-SVD few-shot and base→novel, natural (CLIP ViT-B/16) and biomedical (BiomedCLIP), from
HealthX-Lab/CLIP-SVD's README; ProLIP base-to-new (ViT-B/16) from astra-vision/ProLIP's README. No CLIPFit
table: minglllli/CLIPFit's README has no results and the paper's tables (arXiv 2409.16718) could not be read
offline, so there is no published CLIPFit number to ship.

A table may also be given as a path to a JSON file in the same format; such a file may carry
`hyperparameters` ({method: overrides}, e.g. a quick check on a small model). Shipped tables never do: their
runs use the official presets.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from clipsvd.errors import ConfigError
from clipsvd.methods.presets import BACKBONES, PROTOCOLS

LAYOUTS = {"coop": "natural", "biomedcoop": "biomedical"}  # data layout -> the backbone family it belongs to
METRICS = {"few-shot": ("accuracy",), "base2novel": ("base", "novel", "hm")}
HM_CONVENTIONS = ("hm-of-averages", "average-of-hms")
SOURCE_FIELDS = ("paper", "arxiv", "table", "repository", "commit", "file")
AVERAGE = "average"
# Dataset folders known under another name: the CLIP-SVD repository's COVID_19 is BiomedCoOp's COVID-QU-Ex.
FOLDER_ALIASES = {"COVID_19": ("COVID-QU-Ex",)}
# What each backbone's published numbers were measured with, and how to give it here (nothing is downloaded).
EXPECTED_WEIGHTS = {
    "natural": "give OpenAI's archive with --weights /path/ViT-B-16.pt (or --arch ViT-B-16 --weights openai with a "
               "filled open_clip cache)",
    "biomedical": "give --arch hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 with a local Hugging "
                  "Face cache holding it and its text tower, or --arch local-dir:/folder",
}


@dataclass(frozen=True)
class Published:
    """One published row: `values[K][metric]` for one dataset ("average": the mean over the table's datasets)."""

    label: str
    method: str | None  # our registry name; None: a reference row
    source: str  # key into Table.sources
    dataset: str
    values: dict[int, dict[str, float]]
    note: str = ""
    hm_convention: str | None = None  # base→novel: how the published HM was formed

    @property
    def reference(self) -> bool:
        return self.method is None


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    protocol: str
    backbone: str
    layout: str
    model: str
    datasets: tuple[str, ...]
    shots: tuple[int, ...]
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    sources: dict[str, dict[str, str]]
    published: tuple[Published, ...]
    per_dataset: str  # what to say where a dataset has no published cell
    grid_source: str = ""
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: str = ""

    @property
    def metrics(self) -> tuple[str, ...]:
        return METRICS[self.protocol]

    @property
    def expected_weights(self) -> str:
        return EXPECTED_WEIGHTS[self.backbone]

    def source_text(self, key: str) -> str:
        """"repo@commit file, table (arXiv id)": where a published row was read."""
        s = self.sources[key]
        return f"{s['repository']}@{s['commit'][:12]} {s['file']}, {s['table']} (arXiv {s['arxiv']})"

    def dataset_of(self, name: str) -> str:
        """The table's name for a dataset folder (an alias such as COVID-QU-Ex maps back to COVID_19)."""
        for canonical, aliases in FOLDER_ALIASES.items():
            if name in aliases and canonical in self.datasets:
                return canonical
        return name

    def published_cell(self, method: str, dataset: str, shots: int) -> tuple[Published, dict[str, float]] | None:
        """The published numbers of our `method` for one dataset (or AVERAGE) and K, with their row."""
        for row in self.published:
            if row.method == method and row.dataset == dataset and shots in row.values:
                return row, row.values[shots]
        return None


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ConfigError(f"{where}: missing field '{key}'")
    if not isinstance(data[key], kind):
        raise ConfigError(f"{where}: field '{key}' should be {getattr(kind, '__name__', kind)}, got {data[key]!r}")
    return data[key]


def _parse_row(row: dict[str, Any], index: int, sources: dict, protocol: str, datasets: list[str],
               where: str) -> Published:
    at = f"{where}, published[{index}]"
    label = _require(row, "label", str, at)
    method = row.get("method")
    if method is not None and not isinstance(method, str):
        raise ConfigError(f"{at} ({label}): 'method' should be a method name or null, got {method!r}")
    source = _require(row, "source", str, at)
    if source not in sources:
        raise ConfigError(f"{at} ({label}): source '{source}' is not in 'sources' ({', '.join(sources)})")
    dataset = row.get("dataset", AVERAGE)
    if dataset != AVERAGE and dataset not in datasets:
        raise ConfigError(f"{at} ({label}): dataset '{dataset}' is not one of the table's datasets")
    values: dict[int, dict[str, float]] = {}
    for shots, cell in _require(row, "values", dict, at).items():
        if not str(shots).isdigit() or not isinstance(cell, dict) or not cell:
            raise ConfigError(f"{at} ({label}): values should map K to {{metric: number}}, got {shots!r}: {cell!r}")
        unknown = set(cell) - set(METRICS[protocol])
        if unknown or not all(isinstance(v, (int, float)) for v in cell.values()):
            raise ConfigError(f"{at} ({label}): K={shots} has {sorted(cell)}; a {protocol} table publishes "
                              f"{', '.join(METRICS[protocol])} as numbers")
        values[int(shots)] = {k: float(v) for k, v in cell.items()}
    convention = row.get("hm_convention")
    if convention is not None and convention not in HM_CONVENTIONS:
        raise ConfigError(f"{at} ({label}): hm_convention should be one of {', '.join(HM_CONVENTIONS)}")
    return Published(label, method, source, dataset, values, row.get("note", ""), convention)


def parse_table(data: dict[str, Any], where: str) -> Table:
    """A table from its JSON document; ConfigError naming `where` (the file) and the field at fault."""
    from clipsvd.methods import available_methods

    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    protocol = _require(data, "protocol", str, where)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{where}: protocol should be one of {', '.join(PROTOCOLS)}, got '{protocol}'")
    backbone = _require(data, "backbone", str, where)
    if backbone not in BACKBONES:
        raise ConfigError(f"{where}: backbone should be one of {', '.join(BACKBONES)}, got '{backbone}'")
    layout = _require(data, "layout", str, where)
    if layout not in LAYOUTS:
        raise ConfigError(f"{where}: layout should be one of {', '.join(LAYOUTS)}, got '{layout}'")
    lists = {key: _require(data, key, list, where) for key in ("datasets", "shots", "seeds", "methods")}
    for key, items in lists.items():
        if not items:
            raise ConfigError(f"{where}: '{key}' is empty")
    unknown = set(lists["methods"]) - set(available_methods())
    if unknown:
        raise ConfigError(f"{where}: methods {sorted(unknown)} are not registered ({', '.join(available_methods())})")
    sources = _require(data, "sources", dict, where)
    for key, source in sources.items():
        missing = [f for f in SOURCE_FIELDS if not isinstance(source, dict) or not source.get(f)]
        if missing:
            raise ConfigError(f"{where}: sources.{key} lacks {', '.join(missing)}")
    rows = tuple(_parse_row(row, i, sources, protocol, lists["datasets"], where)
                 for i, row in enumerate(_require(data, "published", list, where)))
    hyperparameters = data.get("hyperparameters", {})
    if not isinstance(hyperparameters, dict) or set(hyperparameters) - set(lists["methods"]):
        raise ConfigError(f"{where}: 'hyperparameters' should map the table's methods to overrides")
    return Table(
        name=_require(data, "name", str, where), title=_require(data, "title", str, where), protocol=protocol,
        backbone=backbone, layout=layout, model=data.get("model", backbone), datasets=tuple(lists["datasets"]),
        shots=tuple(int(k) for k in lists["shots"]), seeds=tuple(int(s) for s in lists["seeds"]),
        methods=tuple(lists["methods"]), sources=sources, published=rows,
        per_dataset=data.get("per_dataset", "not published per dataset"), grid_source=data.get("grid_source", ""),
        hyperparameters=hyperparameters, path=where)


def _read(path: Any, where: str) -> Table:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc})") from exc
    return parse_table(data, where)


def _table_files() -> dict[str, Any]:
    folder = resources.files("clipsvd.reproduce") / "tables"
    return {entry.name[:-5]: entry for entry in folder.iterdir() if entry.name.endswith(".json")}


@lru_cache(maxsize=None)
def _shipped(name: str) -> Table:
    entry = _table_files()[name]
    table = _read(entry, f"clipsvd/reproduce/tables/{entry.name}")
    if table.name != name:
        raise ConfigError(f"clipsvd/reproduce/tables/{entry.name}: name '{table.name}' differs from the file name")
    return table


def available_tables() -> list[str]:
    """Names of the shipped tables (the CLI's TABLE argument)."""
    return sorted(_table_files())


def get_table(name: str) -> Table:
    """A shipped table by name, or a table JSON file by path."""
    if name in _table_files():
        return _shipped(name)
    path = Path(name).expanduser()
    if name.endswith(".json") and path.is_file():
        return _read(path, str(path))
    raise ConfigError(f"unknown table '{name}'; expected one of {', '.join(available_tables())}, or a path to a "
                      "table JSON file")


__all__ = ["AVERAGE", "EXPECTED_WEIGHTS", "FOLDER_ALIASES", "LAYOUTS", "Published", "Table", "available_tables",
           "get_table", "parse_table"]
