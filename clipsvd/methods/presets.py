"""The official training protocols of each method's paper, as package data read from its code.

`presets/<method>.json` lists rules in order; a rule's values apply when every key of its `match`
equals the setting (protocol, backbone, dataset, shots; a list matches any member; a rule without a
backbone key is the method's default for every dataset, ours included), later rules
override earlier ones, and each rule names the file of the official repository it comes from. A rule with its
own `origin` did not come from the document's repository: the family "world" (the world CLIP on the generated
world's datasets, which no paper covers) holds values measured by this project's own search, and says where. Two
value forms depend on K: {"per_shot": n} means n·K (CLIP-SVD's 200·K iterations) and
{"inverse_shot": n} means n/K (ProLIP's λ = 1/K); without K they leave the default. A document's `notes` map a
protocol to what its repository says (or does not say) about it, e.g. that it ships no cross-dataset settings.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from clipsvd.choices import BACKBONES, PROTOCOLS
from clipsvd.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    """What an official protocol depends on: protocol, K, the dataset (canonical name) and the backbone family."""

    protocol: str = "few-shot"
    shots: int | None = None
    dataset: str | None = None  # CoOp / BiomedCoOp canonical name, e.g. "DescribableTextures", "BTMRI"
    backbone: str | None = None  # natural (CLIP ViT-B/16) | biomedical (BiomedCLIP) | world; None: no preset

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got '{self.protocol}'")
        if self.backbone is not None and self.backbone not in BACKBONES:
            raise ConfigError(f"backbone: expected one of {', '.join(BACKBONES)}, got '{self.backbone}'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    """The values an official protocol sets for one setting, and where each came from."""

    values: dict[str, Any]
    sources: dict[str, str]  # field -> "owner/repo@commit:path"
    differences: tuple[str, ...] = ()  # where the paper and its code disagree (we follow the code)
    notes: tuple[str, ...] = ()  # the document's notes on the setting's protocol (e.g. no official settings)

    def to_dict(self) -> dict[str, Any]:
        data = {"values": self.values, "sources": self.sources, "differences": list(self.differences)}
        return {**data, "notes": list(self.notes)} if self.notes else data

    def by_source(self) -> dict[str, dict[str, Any]]:
        """The values grouped by where they came from, in rule order: what a form shows under "preset from"."""
        groups: dict[str, dict[str, Any]] = {}
        for key, value in self.values.items():
            groups.setdefault(self.sources[key], {})[key] = value
        return groups


NO_PRESET = Preset({}, {})


@lru_cache(maxsize=None)
def _document(method: str) -> dict[str, Any] | None:
    path = resources.files("clipsvd.methods") / "presets" / f"{method}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc


def _matches(match: dict[str, Any], setting: Setting) -> bool:
    return all(getattr(setting, key) in (wanted if isinstance(wanted, list) else [wanted])
               for key, wanted in match.items())


def _resolve(value: Any, shots: int | None) -> Any:
    """Values that depend on K: {"per_shot": n} -> n·K, {"inverse_shot": n} -> n/K; None when K is unknown."""
    if isinstance(value, dict) and set(value) == {"per_shot"}:
        return value["per_shot"] * shots if shots else None
    if isinstance(value, dict) and set(value) == {"inverse_shot"}:
        return value["inverse_shot"] / shots if shots else None
    return value


def official_preset(method: str, setting: Setting) -> Preset:
    """The official protocol's values for `setting` (empty where the method's paper has none for it)."""
    document = _document(method)
    if document is None:
        return NO_PRESET
    origin = f"{document['repository']}@{document['commit'][:12]}" if "repository" in document else None
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    official = False  # whether any value came from the document's repository (its differences apply then)
    for rule in document["rules"]:
        if not _matches(rule.get("match", {}), setting):
            continue
        for key, value in rule["values"].items():
            resolved = _resolve(value, setting.shots)
            if resolved is None:
                continue
            where = rule.get("origin", origin)
            if where is None:
                raise ConfigError(f"presets/{method}.json: a rule for {rule.get('match')} names no origin and the "
                                  "file no repository")
            values[key] = resolved
            sources[key] = f"{where}:{rule['source']}"
            official = official or "origin" not in rule
    notes = tuple(document.get("notes", {}).get(setting.protocol, ()))
    if not values:
        return Preset({}, {}, (), notes) if notes else NO_PRESET
    return Preset(values, sources, tuple(document.get("differences", ())) if official else (), notes)


WORLD_PREFIX = "world-"  # the generated world's datasets: world-<task>-<style> (clipsvd.data.world)


def preset_family(kind: str, name: str) -> str | None:
    """Whose presets a dataset gets when the user names none: CoOp data -> natural, BiomedCoOp data -> biomedical,
    the generated world's built-ins -> world (the search README reports); any other dataset -> none."""
    if kind == "builtin" and name.startswith(WORLD_PREFIX):
        return "world"
    return {"coop": "natural", "biomedcoop": "biomedical"}.get(kind)
