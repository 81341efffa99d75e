"""The embedded default corpus: the docstrings of the Python standard library.

Every machine that runs neo has a Python interpreter, and with it a few megabytes of carefully written English
prose about programming: the module, class and function docstrings of the standard library. It needs no network,
no download and no licence beyond Python's own, and it is the same text on every machine with the same Python
version. The quickstart trains its tokenizer and model on it.
"""

from __future__ import annotations

import ast
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path

# Test suites and vendored packages are code-heavy and version-specific; the prose lives in the library proper.
_SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3", "turtledemo"}
MIN_CHARS = 200  # shorter docstrings are one-liners with little to learn from


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _unwrap(doc: str) -> str:
    """Join the hard-wrapped lines of prose paragraphs; leave code, lists and tables (indented lines) as they are.

    Docstrings wrap at ~72 columns, which makes the newline the most frequent token; unwrapped prose is closer to
    the text a language model is usually trained on.
    """
    paragraphs = []
    for para in doc.split("\n\n"):
        lines = para.splitlines()
        prose = lines and all(
            line and not line[0].isspace() and not line.startswith((">>>", "-", "*")) for line in lines
        )
        paragraphs.append(" ".join(lines) if prose else para)
    return "\n\n".join(paragraphs)


def _docstrings(source: str) -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old modules carry invalid escape sequences
        tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= MIN_CHARS:
                yield _unwrap(doc)


def iter_documents(max_chars: int | None = None) -> Iterator[str]:
    """Each standard-library module's long docstrings as one document, in a fixed (sorted) order."""
    total = 0
    root = stdlib_dir()
    for path in sorted(root.rglob("*.py")):
        if _SKIP_PARTS.intersection(path.relative_to(root).parts):
            continue
        try:
            docs = list(_docstrings(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        if not docs:
            continue
        text = "\n\n".join(docs)
        yield text
        total += len(text)
        if max_chars is not None and total >= max_chars:
            return


def write_corpus(out_dir: Path, max_chars: int | None = None, eval_every: int = 20) -> tuple[Path, Path, int]:
    """Write the corpus as .txt documents under out_dir/{train,eval}; every `eval_every`-th document is held out.

    Returns the two directories and the number of documents.
    """
    train_dir, eval_dir = out_dir / "train", out_dir / "eval"
    train_dir.mkdir(parents=True, exist_ok=True)
    eval_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for n, doc in enumerate(iter_documents(max_chars), start=1):
        target = eval_dir if n % eval_every == 0 else train_dir
        (target / f"doc{n:05d}.txt").write_text(doc + "\n", encoding="utf-8")
    return train_dir, eval_dir, n
