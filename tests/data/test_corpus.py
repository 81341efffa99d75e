"""Corpus reading: every supported format, input resolution, and bad inputs skipped (and counted), never fatal."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard

from neo.data.corpus import CorpusStats, iter_documents, read_file, resolve_inputs
from neo.errors import DataError
from tests.data.datahelpers import write_jsonl

DOCS = ["first doc", "second doc\nwith two lines", "third ünïcode ✓"]


def _jsonl_bytes(docs: list[str]) -> bytes:
    return "\n".join(json.dumps({"text": d}) for d in docs).encode()


def _tar(path: Path, members: dict[str, bytes], mode: str) -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "name,make",
    [
        ("a.jsonl", lambda p: p.write_bytes(_jsonl_bytes(DOCS))),
        ("a.jsonl.zst", lambda p: p.write_bytes(zstandard.ZstdCompressor().compress(_jsonl_bytes(DOCS)))),
        ("a.jsonl.gz", lambda p: p.write_bytes(gzip.compress(_jsonl_bytes(DOCS)))),
        ("a.jsonl.xz", lambda p: p.write_bytes(lzma.compress(_jsonl_bytes(DOCS)))),
        ("a.json.zst", lambda p: p.write_bytes(zstandard.ZstdCompressor().compress(json.dumps(DOCS).encode()))),
        (
            "a.dat.zst",
            lambda p: p.write_bytes(
                zstandard.ZstdCompressor().compress(b"".join(b"%016d" % len(d.encode()) + d.encode() for d in DOCS))
            ),
        ),
        ("a.tar.gz", lambda p: _tar(p, {f"d{i}.txt": d.encode() for i, d in enumerate(DOCS)}, "w:gz")),
        ("a.tar.xz", lambda p: _tar(p, {"x.jsonl": _jsonl_bytes(DOCS)}, "w:xz")),
        (
            "a.jsonl.zst.tar",
            lambda p: _tar(p, {"x.jsonl.zst": zstandard.ZstdCompressor().compress(_jsonl_bytes(DOCS))}, "w"),
        ),
    ],
)
def test_each_archive_format_yields_every_document(tmp_path: Path, name: str, make) -> None:
    path = tmp_path / name
    make(path)
    assert list(read_file(path)) == DOCS  # the last document (no trailing newline) is never dropped


def test_txt_zip_and_xz_are_documents(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text(DOCS[0])
    (tmp_path / "b.xz").write_bytes(lzma.compress(DOCS[1].encode()))
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as zf:
        zf.writestr("one.txt", DOCS[2])
        zf.writestr("two.jsonl", _jsonl_bytes(DOCS[:2]))
    files = resolve_inputs([tmp_path])
    assert [f.name for f in files] == ["a.txt", "b.xz", "c.zip"]
    assert list(iter_documents(files)) == [DOCS[0], DOCS[1], DOCS[2], DOCS[0], DOCS[1]]


def test_paragraph_lists_are_joined(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"text": ["para one", "para two"], "meta": {}}))
    assert list(read_file(path)) == ["para one\n\npara two"]


def test_resolve_inputs_dirs_globs_and_dedup(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "sub" / "deep" / "z.txt").write_text("z")
    (tmp_path / "sub" / "a.txt").write_text("a")
    (tmp_path / "sub" / "ignored.bin").write_bytes(b"\x00")
    write_jsonl(tmp_path / "b.jsonl", ["b"])
    found = resolve_inputs([tmp_path / "sub", str(tmp_path / "*.jsonl"), tmp_path / "sub" / "a.txt"])
    assert [p.name for p in found] == ["a.txt", "z.txt", "b.jsonl"]
    assert [p.name for p in resolve_inputs([str(tmp_path / "**" / "*.txt")])] == ["a.txt", "z.txt"]


@pytest.mark.parametrize("bad", ["missing.txt", "nomatch/*.txt"])
def test_resolve_inputs_rejects_missing(tmp_path: Path, bad: str) -> None:
    with pytest.raises(DataError, match=r"does not exist|matches no"):
        resolve_inputs([str(tmp_path / bad)])


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no readable corpus files"):
        resolve_inputs([tmp_path])


def test_bad_files_are_skipped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "1_good.txt").write_text("good")
    (tmp_path / "2_latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "3_binary.txt").write_bytes(b"ELF\x00\x01\x02")
    (tmp_path / "4_corrupt.jsonl.zst").write_bytes(b"not zstd at all")
    (tmp_path / "5_halfbad.jsonl").write_text('{"text": "kept"}\n{broken json\n{"text": "after"}')
    (tmp_path / "6_notext.jsonl").write_text('{"body": "no text key"}')
    (tmp_path / "7_good.jsonl").write_text('{"text": "also good"}')
    (tmp_path / "8_empty.txt").write_text("")
    unreadable = tmp_path / "9_unreadable.txt"
    unreadable.write_text("secret")
    unreadable.chmod(0)
    stats = CorpusStats()
    docs = list(iter_documents(resolve_inputs([tmp_path]), stats))
    assert docs[:3] == ["good", "kept", "also good"]
    reasons = {Path(s.path).name: s.reason for s in stats.skipped}
    assert "invalid UTF-8" in reasons["2_latin1.txt"]
    assert "binary" in reasons["3_binary.txt"]
    assert "unreadable" in reasons["4_corrupt.jsonl.zst"]
    assert "invalid JSON" in reasons["5_halfbad.jsonl"]
    assert "text" in reasons["6_notext.jsonl"]
    assert stats.files == 9
    assert stats.documents == len(docs)
    if docs[3:]:  # running as root can read a chmod-0 file; otherwise it is skipped as unreadable
        assert docs[3:] == ["secret"]
    else:
        assert "unreadable" in reasons["9_unreadable.txt"]
