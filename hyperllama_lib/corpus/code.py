"""Code documents: the interpreter's stdlib as an offline stand-in for python-edu, and cutting code
files into pieces at top-level statements."""
from __future__ import annotations

import ast
import os
import sysconfig
from pathlib import Path

from .splits import stable_unit
from .text import Document

_EXCLUDED_CODE_DIRS = {"test", "tests", "idlelib", "site-packages", "__pycache__"}


def _stdlib_sources(root: Path) -> list[str]:
    """Relative paths of the *.py files under root, pruning the excluded folders while walking."""
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _EXCLUDED_CODE_DIRS]
        rel = Path(folder).relative_to(root)
        found.extend((rel / name).as_posix() for name in files if name.endswith(".py"))
    return found


def code_documents(max_bytes: int | None, seed: int = 0) -> list[Document]:
    """Python source of the interpreter's stdlib as documents: a stand-in for python-edu.

    Files `*.py` under sysconfig's stdlib path, skipping test/tests/idlelib/site-packages folders.
    Sorted relative paths are ordered by stable hash of (seed, path); files are taken in that
    order, skipping any that would push the total UTF-8 size over `max_bytes`. Text is kept as is
    (newlines matter in code); files that are not UTF-8 are skipped. source = relative path.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(_stdlib_sources(root))
    paths.sort(key=lambda rel: stable_unit(rel, seed, "code"))
    docs = []
    total = 0
    max_bytes = float("inf") if max_bytes is None else max_bytes
    for rel in paths:
        if total >= max_bytes:
            break
        path = root / rel
        if total + path.stat().st_size > max_bytes:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        size = len(text.encode("utf-8"))
        if text.strip() and total + size <= max_bytes:
            docs.append(Document(text, "code", rel))
            total += size
    return docs


def _top_level_starts(code: str) -> set[int]:
    """0-based line numbers where a top-level statement (with its decorators) starts."""
    try:
        body = ast.parse(code).body
    except (SyntaxError, ValueError):
        return set()
    return {min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1 for node in body}


def chunk_code(docs: list[Document], max_chars: int) -> list[Document]:
    """Split code files into pieces of about `max_chars`, cutting only where a top-level statement
    starts (found with `ast`; a file that does not parse stays whole), so that small-scale replay
    samples many files' worth of code instead of one or two whole files. Source becomes "path#k"."""
    out = []
    for doc in docs:
        starts = _top_level_starts(doc.text)
        pieces, current, size = [], [], 0
        for i, line in enumerate(doc.text.splitlines(keepends=True)):
            if size >= max_chars and i in starts:
                pieces.append("".join(current))
                current, size = [], 0
            current.append(line)
            size += len(line)
        pieces.append("".join(current))
        out += [Document(t.strip("\n"), doc.lang, f"{doc.source}#{k}") for k, t in enumerate(pieces) if t.strip()]
    return out
