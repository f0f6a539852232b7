"""Text corpora TextSpan chooses head descriptions from: one short image description per line.

A line may start with a tag in brackets, "[colour] a red object": the tag names what the line
describes (the world corpus tags each line with its factor), is not part of the text, and lets
TextSpan's choices be scored by topic (`corpus_tags`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from clipsvd.errors import DataError
from clipsvd.resources import corpus_dir

if TYPE_CHECKING:
    from clipsvd.models import ModelSpec

CORPUS_DIR = corpus_dir()
BUILTIN_CORPORA = ("world", "general", "biomedical")
_TAG = re.compile(r"^\[([^\]]+)\]\s*(.*)$")


def decode_corpus(data: bytes, source: str) -> str:
    """UTF-8 text of a corpus file's bytes; DataError naming the file and the first bad byte's offset (never
    replacement characters: a corpus in another encoding would silently explain heads with garbled words)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"corpus {source} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as "
                        "UTF-8") from None


def parse_corpus(text: str | bytes, source: str | None = None) -> list[str]:
    """Lines stripped, empty ones dropped, duplicates dropped (first kept): TextSpan needs distinct texts.

    With `source` (e.g. an uploaded file's name), an empty result raises DataError naming it. Bytes (an upload)
    are decoded as strict UTF-8 (`decode_corpus`).
    """
    if isinstance(text, bytes):
        text = decode_corpus(text, source or "upload")
    return list(parse_tagged_corpus(text, source))


def parse_tagged_corpus(text: str, source: str | None = None) -> dict[str, str | None]:
    """Text -> its tag (None when the line has none), in file order, without duplicates."""
    seen: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.strip()
        match = _TAG.match(line)
        tag, line = (match.group(1).strip(), match.group(2).strip()) if match else (None, line)
        if line:
            seen.setdefault(line, tag)
    if not seen and source is not None:
        raise DataError(f"corpus {source} has no text lines; expected one description per line")
    return seen


def default_corpus_for(model: ModelSpec | str) -> str:
    """The built-in corpus that suits a model (a ModelSpec or its architecture name): "world" for the
    world CLIP, "biomedical" for biomedical models (BiomedCLIP and other hub ids naming "biomed"),
    "general" otherwise."""
    from clipsvd.models.world_weights import WORLD_MODEL_NAME

    architecture = str(getattr(model, "architecture", model))
    if architecture == WORLD_MODEL_NAME:
        return "world"
    if "biomed" in architecture.lower():
        return "biomedical"
    return "general"


def corpus_path(name_or_path: str | Path) -> Path:
    """The file a corpus name ("general", "biomedical") or path refers to."""
    if str(name_or_path) in BUILTIN_CORPORA:
        return CORPUS_DIR / f"{name_or_path}.txt"
    return Path(name_or_path)


def load_corpus(name_or_path: str | Path) -> list[str]:
    """A built-in corpus by name or a user's text file; DataError naming the file if unusable or empty."""
    return list(corpus_tags(name_or_path))


def corpus_tags(name_or_path: str | Path) -> dict[str, str | None]:
    """Text -> tag of every line of a corpus (tags are None for untagged lines)."""
    path = corpus_path(name_or_path)
    if not path.is_file():
        raise DataError(f"corpus file not found: {path} (built-in corpora: {', '.join(BUILTIN_CORPORA)})")
    text = decode_corpus(path.read_bytes(), f"file {path}")
    return parse_tagged_corpus(text, source=f"file {path}")
