"""One path layer for local files and object stores (`gs://bucket/...`), on fsspec/gcsfs.

Every path neo reads or writes goes through here, as a `str`: local paths stay plain local paths (handled by the
standard library, never turned into a `gs:` folder) and URLs are never passed through `pathlib.Path` (which turns
`gs://b/x` into `gs:/b/x`). Object stores have no append and no atomic rename, but a single object write is atomic:
`atomic_writer`/`write_atomic` use temp file + rename locally and one complete object write remotely.

A bad URL (no bucket, no credentials, endpoint unreachable, object not found) raises one `StorageError` naming the
URL and the fix. The endpoint is probed once per process with a short TCP timeout, so a missing endpoint fails in
seconds instead of after gcsfs's minute of retries.
"""

from __future__ import annotations

import builtins
import contextlib
import glob as _glob
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from neo.errors import StorageError

# orbax's directory operations (etils.epath) go through gcsfs, not TensorFlow's file system (which has the Google
# endpoints compiled in and starts slowly).
os.environ.setdefault("EPATH_USE_TF", "0")

PathLike = str | os.PathLike[str]
_READ_BLOCK = 8 << 20  # readahead block for streaming reads from object stores
_PROBE_TIMEOUT_S = 3.0
_checked: set[str] = set()  # buckets known to exist in this process


def is_remote(path: PathLike) -> bool:
    """True for a URL with a protocol other than file:// (e.g. gs://bucket/key)."""
    s = os.fspath(path)
    return "://" in s and not s.startswith("file://")


_MANGLED = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/(?!/)")  # gs:/b/x: a URL that lost a slash (pathlib does that)


def _local(path: PathLike) -> str:
    s = os.fspath(path)
    if _MANGLED.match(s):
        scheme = s.split(":", 1)[0]
        raise StorageError(f"{s} looks like a URL that lost a slash; write {scheme}://{s.split(':/', 1)[1]}")
    return s[len("file://") :] if s.startswith("file://") else s


def join(base: PathLike, *parts: str) -> str:
    """`base/part/...`; URLs joined with `/`, local paths with os.path.join."""
    if is_remote(base):
        out = os.fspath(base).rstrip("/")
        for p in parts:
            out += "/" + p.strip("/")
        return out
    return os.path.join(_local(base), *parts)


def basename(path: PathLike) -> str:
    return os.fspath(path).rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else os.path.basename(_local(path))


def parent(path: PathLike) -> str:
    if is_remote(path):
        s = os.fspath(path).rstrip("/")
        head, _, _ = s.rpartition("/")
        return head if head.count("/") >= 2 else s  # never above gs://bucket
    return os.path.dirname(os.path.abspath(_local(path)))


def _endpoint() -> tuple[str, int]:
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if emulator:
        u = urlparse(emulator if "://" in emulator else "http://" + emulator)
        return u.hostname or "localhost", u.port or (443 if u.scheme == "https" else 80)
    return "storage.googleapis.com", 443


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of `url` and the path inside it; the bucket is checked once per process."""
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        # no listing cache: other processes (and orbax's own clients) write the same prefixes
        fs, inner = fsspec.core.url_to_fs(url, use_listings_cache=False)
    except (ImportError, ValueError) as exc:
        raise StorageError(
            f"{url}: no file system for {protocol}:// ({exc}); use a local path or gs://bucket/..."
        ) from None
    if protocol in ("gs", "gcs"):
        bucket = inner.split("/", 1)[0]
        if not bucket:
            raise StorageError(f"{url} names no bucket; write gs://BUCKET/path")
        if bucket not in _checked:
            _check_bucket(fs, url, bucket)
            _checked.add(bucket)
    return fs, inner


def _check_bucket(fs: Any, url: str, bucket: str) -> None:
    host, port = _endpoint()
    try:
        socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        hint = "STORAGE_EMULATOR_HOST points there" if os.environ.get("STORAGE_EMULATOR_HOST") else "check the network"
        raise StorageError(f"{url}: Cloud Storage endpoint {host}:{port} is unreachable ({exc}); {hint}") from None
    with _errors(url):
        try:
            fs.info(bucket)
        except FileNotFoundError:
            raise StorageError(
                f"{url}: bucket gs://{bucket} does not exist; create it (gcloud storage buckets create "
                f"gs://{bucket}) or fix the URL"
            ) from None
        except OSError as exc:  # gcsfs raises a plain OSError("Forbidden: ...") for 403
            if "Forbidden" not in str(exc) and not isinstance(exc, PermissionError):
                raise
            # object-level access without bucket metadata access: the object operations decide


@contextlib.contextmanager
def _errors(url: str) -> Iterator[None]:
    """Translate an object store's exceptions into one StorageError naming the URL and the fix."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError:
        raise StorageError(f"{url} not found; check the URL (gcloud storage ls {url})") from None
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if "401" in text or "403" in text or "Forbidden" in text or "credential" in text.lower():
            raise StorageError(
                f"{url}: access denied ({text}); authenticate with `gcloud auth application-default login` or set "
                "GOOGLE_APPLICATION_CREDENTIALS to a key that can use the bucket"
            ) from None
        if isinstance(exc, OSError | ConnectionError) or "Client" in type(exc).__name__:
            raise StorageError(f"{url}: {text}; check the URL and the network") from None
        raise


def exists(path: PathLike) -> bool:
    if not is_remote(path):
        return os.path.exists(_local(path))
    url = os.fspath(path)
    fs, inner = _filesystem(url)
    with _errors(url):
        return bool(fs.exists(inner))


def isfile(path: PathLike) -> bool:
    if not is_remote(path):
        return os.path.isfile(_local(path))
    url = os.fspath(path)
    fs, inner = _filesystem(url)
    with _errors(url):
        return bool(fs.isfile(inner))


def isdir(path: PathLike) -> bool:
    """A local directory, or a prefix with objects under it (object stores have no empty directories)."""
    if not is_remote(path):
        return os.path.isdir(_local(path))
    url = os.fspath(path)
    fs, inner = _filesystem(url)
    with _errors(url):
        return bool(fs.isdir(inner))


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] + "://"


def listdir(path: PathLike) -> list[str]:
    """Full paths of the entries directly under `path`, sorted."""
    if not is_remote(path):
        p = _local(path)
        return sorted(os.path.join(p, n) for n in os.listdir(p))
    url = os.fspath(path)
    fs, inner = _filesystem(url)
    with _errors(url):
        return sorted(_protocol(url) + e.rstrip("/") for e in fs.ls(inner, detail=False) if e.rstrip("/") != inner)


def sizes(path: PathLike) -> dict[str, int]:
    """{name: size in bytes} of the files directly under `path`, from one listing."""
    if not is_remote(path):
        with os.scandir(_local(path)) as entries:
            return {e.name: e.stat().st_size for e in entries if e.is_file()}
    url = os.fspath(path)
    fs, inner = _filesystem(url)
    with _errors(url):
        return {
            e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
            for e in fs.ls(inner, detail=True)
            if e.get("type") == "file"
        }


def find(path: PathLike) -> list[str]:
    """Every file under `path`, recursively, sorted (a file yields itself)."""
    if not is_remote(path):
        p = _local(path)
        if os.path.isfile(p):
            return [p]
        return sorted(os.path.join(d, f) for d, _, files in os.walk(p) for f in files)
    url = os.fspath(path)
    fs, inner = _filesystem(url)
    with _errors(url):
        return sorted(_protocol(url) + f for f in fs.find(inner))


def glob(pattern: PathLike) -> list[str]:
    """Paths matching `pattern` (`**` recursive), sorted."""
    if not is_remote(pattern):
        return sorted(_glob.glob(_local(pattern), recursive=True))
    url = os.fspath(pattern)
    fs, inner = _filesystem(url)
    with _errors(url):
        return sorted(_protocol(url) + f for f in fs.glob(inner))


def size(path: PathLike) -> int:
    if not is_remote(path):
        return os.path.getsize(_local(path))
    url = os.fspath(path)
    fs, inner = _filesystem(url)
    with _errors(url):
        return int(fs.size(inner))


def makedirs(path: PathLike) -> None:
    """Create a local directory (and parents); a no-op on object stores beyond checking the bucket."""
    if not is_remote(path):
        os.makedirs(_local(path), exist_ok=True)
        return
    _filesystem(os.fspath(path))


def open(path: PathLike, mode: str = "rb", **kwargs: Any) -> IO[Any]:
    """Open for reading or writing. Remote reads stream through a readahead cache. A remote write becomes visible
    when the file is closed; for writes that must never be seen half-done use `atomic_writer`."""
    if not is_remote(path):
        return builtins.open(_local(path), mode, **kwargs)
    url = os.fspath(path)
    fs, inner = _filesystem(url)
    if "a" in mode:
        raise ValueError("object stores cannot append; rewrite the object")
    options: dict[str, Any] = {"cache_type": "readahead", "block_size": _READ_BLOCK} if "r" in mode else {}
    with _errors(url):
        return fs.open(inner, mode, **options, **kwargs)


def read_bytes(path: PathLike) -> bytes:
    url = os.fspath(path)
    with _errors(url), open(path, "rb") as f:
        return f.read()


def read_text(path: PathLike) -> str:
    return read_bytes(path).decode("utf-8")


@contextlib.contextmanager
def atomic_writer(path: PathLike) -> Iterator[IO[bytes]]:
    """A binary file that appears at `path` complete or not at all: local = temp file + rename on success; object
    store = one object write, discarded if the block raises."""
    if not is_remote(path):
        target = _local(path)
        directory = os.path.dirname(os.path.abspath(target))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return
    url = os.fspath(path)
    fs, inner = _filesystem(url)
    with _errors(url):
        f = fs.open(inner, "wb")
    try:
        yield f
    except BaseException:
        with contextlib.suppress(Exception):
            f.discard()  # no object is created
        raise
    with _errors(url):
        f.close()


def write_atomic(path: PathLike, data: bytes | str) -> None:
    """Write `data` to `path` complete or not at all."""
    with atomic_writer(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def create_exclusive(path: PathLike, data: bytes | str) -> bool:
    """Write `path` only if nothing is there (in an object store: a write conditional on no live object); False when
    something already is. The primitive a lock is built on."""
    data = data.encode("utf-8") if isinstance(data, str) else data
    if not is_remote(path):
        try:
            with builtins.open(_local(path), "xb") as f:
                f.write(data)
        except FileExistsError:
            return False
        return True
    url = os.fspath(path)
    fs, inner = _filesystem(url)
    with _errors(url):
        try:
            fs.pipe_file(inner, data, mode="create")
        except FileExistsError:
            return False
    return True


def remove(path: PathLike, recursive: bool = False) -> None:
    """Remove a file (or a directory tree with `recursive`); a missing path is not an error."""
    if not is_remote(path):
        p = _local(path)
        if recursive and os.path.isdir(p):
            shutil.rmtree(p)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        return
    url = os.fspath(path)
    fs, inner = _filesystem(url)
    with _errors(url), contextlib.suppress(FileNotFoundError):
        fs.rm(inner, recursive=recursive)


def copy(src: PathLike, dst: PathLike) -> None:
    """Copy one file between any two locations (streaming); `dst` appears complete or not at all."""
    if not is_remote(src) and not is_remote(dst):
        with atomic_writer(dst) as out, builtins.open(_local(src), "rb") as inp:
            shutil.copyfileobj(inp, out, 8 << 20)
        return
    with _errors(os.fspath(src)), open(src, "rb") as inp, atomic_writer(dst) as out:
        shutil.copyfileobj(inp, out, 8 << 20)


def upload_dir(local_dir: PathLike, url: PathLike) -> None:
    """Copy every file under `local_dir` to the same relative path under `url` (any location)."""
    root = os.fspath(local_dir)
    for f in find(root):
        copy(f, join(url, *Path(os.path.relpath(f, root)).parts))


@contextlib.contextmanager
def staged_dir(path: PathLike) -> Iterator[str]:
    """A local directory standing for `path`, for libraries that only write local files: local `path` is used as
    is; for a URL, a temporary directory whose files are uploaded to `path` when the block succeeds."""
    if not is_remote(path):
        makedirs(path)
        yield _local(path)
        return
    _filesystem(os.fspath(path))  # a bad URL fails before any work
    with tempfile.TemporaryDirectory(prefix="neo-stage-") as tmp:
        yield tmp
        upload_dir(tmp, path)


@contextlib.contextmanager
def local_file(path: PathLike) -> Iterator[str]:
    """A local file path with `path`'s content, for readers that need one (downloaded to a temp file if remote)."""
    if not is_remote(path):
        yield _local(path)
        return
    with tempfile.TemporaryDirectory(prefix="neo-fetch-") as tmp:
        local = os.path.join(tmp, basename(path))
        copy(path, local)
        yield local


def cache_dir() -> Path:
    """Where neo keeps what it can rebuild (compiled programs, layout-search reports, decoding layouts): a local
    directory, `$NEO_CACHE_DIR` or ~/.cache/neo."""
    return Path(os.environ.get("NEO_CACHE_DIR") or Path.home() / ".cache" / "neo")


def keep_newest(directory: Path, pattern: str, keep: int) -> None:
    """In a local cache directory, delete all but the `keep` most recently used files matching `pattern`."""
    files = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()
