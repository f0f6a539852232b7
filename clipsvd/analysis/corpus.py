"""Text corpora TextSpan chooses head descriptions from: one short image description per line."""
from __future__ import annotations

from pathlib import Path

from clipsvd.errors import DataError

CORPUS_DIR = Path(__file__).resolve().parents[2] / "corpus"
BUILTIN_CORPORA = ("general", "biomedical")


def parse_corpus(text: str, source: str | None = None) -> list[str]:
    """Lines stripped, empty ones dropped, duplicates dropped (first kept): TextSpan needs distinct texts.

    With `source` (e.g. an uploaded file's name), an empty result raises DataError naming it.
    """
    seen: dict[str, None] = {}
    for line in text.splitlines():
        line = line.strip()
        if line:
            seen.setdefault(line, None)
    if not seen and source is not None:
        raise DataError(f"corpus {source} has no text lines; expected one description per line")
    return list(seen)


def corpus_path(name_or_path: str | Path) -> Path:
    """The file a corpus name ("general", "biomedical") or path refers to."""
    if str(name_or_path) in BUILTIN_CORPORA:
        return CORPUS_DIR / f"{name_or_path}.txt"
    return Path(name_or_path)


def load_corpus(name_or_path: str | Path) -> list[str]:
    """A built-in corpus by name or a user's text file; DataError naming the file if unusable or empty."""
    path = corpus_path(name_or_path)
    if not path.is_file():
        raise DataError(f"corpus file not found: {path} (built-in corpora: {', '.join(BUILTIN_CORPORA)})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"corpus file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return parse_corpus(text, source=f"file {path}")
