"""The path layer (`neo.storage`) on local paths and on a Cloud Storage emulator: same operations, same results."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from neo import storage
from neo.errors import DataError, StorageError


@pytest.fixture(params=["local", "gcs"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh directory: a local one, or a prefix in the emulator's bucket."""
    if request.param == "local":
        return str(tmp_path)
    emulator = request.getfixturevalue("gcs_emulator")
    return f"{emulator.bucket_url}/paths/{request.node.name.replace('[', '_').replace(']', '')}"


def test_write_read_list_copy_remove(root: str) -> None:
    a = storage.join(root, "a.txt")
    storage.write_atomic(a, "hello")
    storage.write_atomic(storage.join(root, "sub", "b.bin"), b"\x00\x01")
    storage.write_atomic(storage.join(root, "sub", "deep", "c.txt"), "c")
    assert storage.exists(a) and storage.isfile(a) and not storage.isdir(a)
    assert storage.isdir(storage.join(root, "sub")) and not storage.exists(storage.join(root, "nope"))
    assert storage.read_text(a) == "hello"
    assert storage.size(a) == 5
    assert [storage.basename(p) for p in storage.listdir(root)] == ["a.txt", "sub"]
    assert [storage.basename(p) for p in storage.find(root)] == ["a.txt", "b.bin", "c.txt"]
    assert [storage.basename(p) for p in storage.glob(storage.join(root, "**", "*.txt"))] == ["a.txt", "c.txt"]
    storage.copy(a, storage.join(root, "copy.txt"))
    assert storage.read_bytes(storage.join(root, "copy.txt")) == b"hello"
    with storage.open(storage.join(root, "sub", "b.bin")) as f:
        assert f.read() == b"\x00\x01"
    storage.remove(a)
    assert not storage.exists(a)
    storage.remove(storage.join(root, "sub"), recursive=True)
    assert not storage.exists(storage.join(root, "sub", "b.bin"))
    storage.remove(storage.join(root, "never-was"))  # a missing path is not an error


def test_atomic_writer_leaves_nothing_when_the_block_fails(root: str) -> None:
    target = storage.join(root, "half.bin")
    storage.makedirs(root)
    with pytest.raises(RuntimeError), storage.atomic_writer(target) as f:
        f.write(b"x" * 1000)
        raise RuntimeError("crash mid-write")
    assert not storage.exists(target)
    if not storage.is_remote(root):
        assert os.listdir(root) == []  # no temp file either


def test_staged_dir_uploads_what_a_local_library_wrote(root: str) -> None:
    target = storage.join(root, "staged")
    with storage.staged_dir(target) as local:
        assert not storage.is_remote(local)
        Path(local, "x").mkdir()
        Path(local, "x", "f.txt").write_text("staged")
    assert storage.read_text(storage.join(target, "x", "f.txt")) == "staged"
    with storage.local_file(storage.join(target, "x", "f.txt")) as path:
        assert Path(path).read_text() == "staged"


def test_urls_are_never_local_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage.is_remote("gs://b/x") and not storage.is_remote("runs/x") and not storage.is_remote(tmp_path)
    assert storage.join("gs://b/run/", "checkpoints", "3") == "gs://b/run/checkpoints/3"
    assert storage.parent("gs://b/run/x.json") == "gs://b/run"
    assert storage.join(tmp_path, "a") == str(tmp_path / "a")
    with pytest.raises(StorageError, match="names no bucket"):
        storage.exists("gs:///x")
    with pytest.raises(StorageError, match="lost a slash; write gs://b/x"):
        storage.write_atomic("gs:/b/x", "x")
    assert not Path("gs:").exists()


def test_no_such_bucket_is_one_storage_error(gcs_emulator: object) -> None:
    with pytest.raises(StorageError, match=r"gs://no-such-bucket-x does not exist"):
        storage.write_atomic("gs://no-such-bucket-x/run/a.txt", "x")


def test_missing_object_is_a_storage_error(gcs_emulator: object) -> None:
    url = f"{gcs_emulator.bucket_url}/missing/file.txt"  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match="not found"):
        storage.read_bytes(url)


def test_corpus_inputs_in_a_bucket_are_found_and_streamed(gcs_emulator: object) -> None:
    import zstandard

    from neo.data.corpus import iter_documents, resolve_inputs

    root = f"{gcs_emulator.bucket_url}/corpus-mixed"  # type: ignore[attr-defined]
    lines = b"".join(json.dumps({"text": f"archived {i}", "meta": {}}).encode() + b"\n" for i in range(3))
    storage.write_atomic(f"{root}/a/docs.jsonl.zst", zstandard.ZstdCompressor().compress(lines))
    storage.write_atomic(f"{root}/b/plain.txt", "plain text")
    storage.write_atomic(f"{root}/b/notes.bin", b"\x00")  # not a corpus file: ignored
    files = resolve_inputs([root])
    assert [storage.basename(f) for f in files] == ["docs.jsonl.zst", "plain.txt"]
    assert list(iter_documents(files)) == ["archived 0", "archived 1", "archived 2", "plain text"]
    assert resolve_inputs([f"{root}/*/*.txt"]) == [f"{root}/b/plain.txt"]
    with pytest.raises(DataError, match="does not exist"):
        resolve_inputs([f"{root}/missing"])


def test_forbidden_is_an_access_error_naming_the_fix() -> None:
    # what gcsfs raises for an HTTP 403 (fake-gcs-server has no access control to provoke one)
    denied = r"gs://b/x: access denied .*gcloud auth application-default login"
    with pytest.raises(StorageError, match=denied), storage._errors("gs://b/x"):
        raise OSError("Forbidden: b/x\nCaller does not have storage.objects.get access")


def test_encode_into_a_bucket_resumes_after_an_interruption(gcs_emulator: object, tmp_path: Path) -> None:
    from neo.data.card import dataset_card
    from neo.data.encode import EncodeProgress, encode_dataset
    from neo.data.tfrecord import read_records
    from neo.data.tokenizer import train_tokenizer

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(90):
        (corpus / f"{i:03d}.txt").write_text(f"document {i} " + "word " * (i % 7 + 1))
    tok = train_tokenizer([corpus], tmp_path / "tok", 300, min_frequency=1).path
    kw = dict(mode="chunks", chunk_size=5, files_per=30)
    ref = encode_dataset([corpus], tmp_path / "ref", tok, **kw)
    out = f"{gcs_emulator.bucket_url}/encode-resume"  # type: ignore[attr-defined]

    def stop_after_two_shards(p: EncodeProgress) -> None:
        if p.shards_done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encode_dataset([corpus], out, tok, progress=stop_after_two_shards, **kw)
    names = [storage.basename(p) for p in storage.listdir(out)]
    assert "dataset.yaml" not in names and [n for n in names if n.endswith(".tfrecords")] == [
        "data_00000.tfrecords",
        "data_00001.tfrecords",
    ]
    card = encode_dataset([corpus], out, tok, **kw)
    assert card.to_dict() == ref.to_dict()
    got = [r.tolist() for r in read_records(dataset_card(out).shard_paths(out))]
    want = [r.tolist() for r in read_records(ref.shard_paths(tmp_path / "ref"))]
    assert got == want
