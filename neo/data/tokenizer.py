"""Train and load byte-level BPE tokenizers (Hugging Face `tokenizers`).

A trained tokenizer is one `tokenizer.json` that both `tokenizers` and `transformers` load. Training streams
documents from the corpus reader, so memory stays bounded by the BPE statistics, not the corpus.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from neo import storage
from neo.data.corpus import CorpusStats, iter_documents, resolve_inputs
from neo.errors import DataError

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
TOKENIZER_FILE = "tokenizer.json"


@dataclass
class TokenizerSummary:
    """What `train_tokenizer` produced."""

    path: str
    vocab_size: int
    eos_id: int
    pad_id: int
    files: int
    documents: int
    skipped: list[tuple[str, str]]


def _ensure_empty_dir(out: str, force: bool) -> None:
    if storage.isfile(out):
        raise DataError(f"{out} exists and is not a directory; pass a directory path to --out")
    if storage.isdir(out) and storage.listdir(out) and not force:
        raise DataError(f"{out} is not empty; pick a new --out directory or pass --force to overwrite its tokenizer")


def build_bpe(nfkc: bool = False) -> Tokenizer:
    """An untrained GPT-2-style byte-level BPE pipeline."""
    tok = Tokenizer(models.BPE())
    if nfkc:
        tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train_tokenizer(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    vocab_size: int,
    *,
    min_frequency: int = 2,
    nfkc: bool = False,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> TokenizerSummary:
    """Train byte-level BPE on the documents of `inputs` and write `out_dir/tokenizer.json`.

    `progress(documents, chars)` is called as documents stream in. The file is written to a temporary name and
    renamed, so an interrupted run never leaves a half-written tokenizer.
    """
    if vocab_size < 258:
        raise DataError(f"--vocab-size must be at least 258 (256 bytes + 2 special tokens), got {vocab_size}")
    if min_frequency < 1:
        raise DataError(f"--min-frequency must be at least 1, got {min_frequency}")
    out = os.fspath(out_dir)
    _ensure_empty_dir(out, force)
    files = resolve_inputs(inputs)
    stats = CorpusStats()

    def docs() -> Iterator[str]:
        chars = 0
        for n, doc in enumerate(iter_documents(files, stats), 1):
            chars += len(doc)
            if progress is not None and (n % 256 == 0):
                progress(n, chars)
            yield doc
        if progress is not None:
            progress(stats.documents, chars)

    tok = build_bpe(nfkc)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs(), trainer=trainer)
    if stats.documents == 0:
        raise DataError(f"no readable documents in the inputs ({len(stats.skipped)} files skipped); check the files")
    target = copy_tokenizer(tok, out)
    return TokenizerSummary(
        path=target,
        vocab_size=tok.get_vocab_size(),
        eos_id=tok.token_to_id(EOS_TOKEN),
        pad_id=tok.token_to_id(PAD_TOKEN),
        files=stats.files,
        documents=stats.documents,
        skipped=[(s.path, s.reason) for s in stats.skipped],
    )


def _from_hub(name: str) -> Tokenizer:
    """Fetch a tokenizer from the Hugging Face hub (or its local cache), failing in seconds when offline.

    The hub client retries for about half a minute on a dead network, so reachability is probed first.
    """
    import socket

    from huggingface_hub import hf_hub_download

    hint = f"could not load the '{name}' tokenizer from the Hugging Face hub (offline?); pass a local tokenizer.json"
    repo = _HUB_REPOS[name]
    try:
        return Tokenizer.from_file(hf_hub_download(repo_id=repo, filename=TOKENIZER_FILE, local_files_only=True))
    except Exception:
        pass  # not cached: go online
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        raise DataError(hint) from None
    try:
        return Tokenizer.from_file(hf_hub_download(repo_id=repo, filename=TOKENIZER_FILE, etag_timeout=5))
    except Exception:  # any network/hub failure means the same thing to the user
        raise DataError(hint) from None


_HUB_REPOS = {"gpt2": "openai-community/gpt2"}


def load_tokenizer(spec: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer from a tokenizer.json file, a directory holding one (local or gs://...), or a hub name such
    as "gpt2"."""
    path = os.fspath(spec)
    if storage.isdir(path):
        path = storage.join(path, TOKENIZER_FILE)
        if not storage.isfile(path):
            raise DataError(f"{spec} holds no {TOKENIZER_FILE}; train one with `neo tokenizer train` or pass its path")
    if storage.isfile(path):
        try:
            return Tokenizer.from_buffer(storage.read_bytes(path))
        except Exception as exc:
            raise DataError(
                f"{path} is not a valid tokenizer.json ({exc}); pass a file written by tokenizers"
            ) from None
    if str(spec) in _HUB_REPOS:
        return _from_hub(str(spec))
    raise DataError(f"tokenizer {str(spec)!r} not found; pass a tokenizer.json, a directory holding one, or gpt2")


def eos_id(tok: Tokenizer) -> int:
    """The end-of-text id: `<|endoftext|>` (our tokenizers and GPT-2's)."""
    tid = tok.token_to_id(EOS_TOKEN)
    if tid is None:
        raise DataError(f"the tokenizer has no {EOS_TOKEN} token; pass --separator ID to choose the separator")
    return tid


def pad_id(tok: Tokenizer) -> int | None:
    """The padding id when the tokenizer has one (GPT-2's has none: its EOS doubles as padding)."""
    tid = tok.token_to_id(PAD_TOKEN)
    return tid if tid is not None else tok.token_to_id(EOS_TOKEN)


def tokenizer_json(tok: Tokenizer) -> str:
    return tok.to_str()


def fingerprint(tok: Tokenizer) -> str:
    """A short hash of the tokenizer's full definition, to detect a resume with a different tokenizer. `to_str()` is
    already canonical (vocabulary and added tokens in id order, fields in a fixed order)."""
    return hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]


def copy_tokenizer(tok: Tokenizer, out_dir: str | os.PathLike[str]) -> str:
    """Write `tok` into `out_dir/tokenizer.json` atomically (any location), so a dataset carries its own tokenizer."""
    target = storage.join(out_dir, TOKENIZER_FILE)
    storage.write_atomic(target, tok.to_str(pretty=True))
    return target


__all__ = [
    "EOS_TOKEN",
    "PAD_TOKEN",
    "TokenizerSummary",
    "build_bpe",
    "copy_tokenizer",
    "eos_id",
    "fingerprint",
    "load_tokenizer",
    "pad_id",
    "train_tokenizer",
]
