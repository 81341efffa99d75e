"""A run's parameters in the decoding layout, kept on local disk so that a repeated `neo sample` starts fast.

Checkpoints hold the layers scanned and every dense weight [in, out]; the decoder wants them unrolled and [out, in]
(`neo.model.decode.for_decoding`). Restoring a checkpoint with orbax and re-laying it out is most of the start-up of
`neo sample`; reading one re-laid-out file back is a small part of it (`benchmarks/sample_e2e.py`). Like the
parameter-only serving checkpoints of MaxText, but made on first use: the first single-device `neo sample` of a
checkpoint writes `NEO_CACHE_DIR/decoding/<key>.safetensors` (default `~/.cache/neo`), and later ones read it.

The key is the checkpoint's identity (its location, step and orbax's commit time) and the decoding config, so a
retrained or replaced checkpoint never reads a stale copy. Only the newest `KEEP` files are kept, a model larger than
`MAX_BYTES` is never cached, and `NEO_DECODING_CACHE=0` turns the cache off. A write that fails (a full or read-only
disk) only loses the speed-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

FORMAT = "1"  # bump when the decoding layout changes
KEEP = 3
MAX_BYTES = 8 * 2**30
DTYPES = {"F32": np.float32, "BF16": ml_dtypes.bfloat16, "F16": np.float16, "I32": np.int32, "I8": np.int8}


def enabled() -> bool:
    return os.environ.get("NEO_DECODING_CACHE", "1") != "0"


def cache_path(identity: str, decoding_config: Any, weights: str = "float32") -> Path:
    """Where the decoding layout of the checkpoint `identity` (see `neo.train.checkpoint.checkpoint_identity`) lives,
    its dense weights held as `weights` (`neo.model.quantize`: quantized once, not at every start)."""
    from neo.storage import cache_dir

    parts = (FORMAT, identity, repr(decoding_config)) + (() if weights == "float32" else (weights,))
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
    return cache_dir() / "decoding" / f"{key}.safetensors"


def read(path: Path) -> Any | None:
    """The cached parameters (nested dicts of arrays on the default device), or None when there is no usable file.

    The file is mapped, not read: each tensor is copied once, from the page cache to the device. (safetensors' own
    loaders copy every tensor first: 0.3-0.5 s for a 500 MB model, against 0.02-0.1 s mapped.)
    """
    import jax

    try:
        tensors = _mapped(path)
    except (OSError, ValueError, KeyError):  # absent, or not a file this module wrote
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used: the last to be pruned
    return jax.device_put(_nested(tensors))


def _nested(tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """Nested dicts from the "a/b/c" names `write` gives."""
    nested: dict[str, Any] = {}
    for name, array in tensors.items():
        *outer, leaf = name.split("/")
        node = nested
        for part in outer:
            node = node.setdefault(part, {})
        node[leaf] = array
    return _rebuilt(nested)


def _rebuilt(node: Any) -> Any:
    """A dict of "Kind.field" entries (how `write` names a quantized weight's fields) as that weight."""
    from neo.model.quantize import LOW_BIT_KINDS

    if not isinstance(node, dict):
        return node
    kinds = {kind.__name__: kind for kind in LOW_BIT_KINDS}
    named = {key.partition(".")[0] for key in node}
    if len(named) == 1 and (kind := kinds.get(named.pop())) is not None:
        return kind(**{key.partition(".")[2]: value for key, value in node.items()})
    return {key: _rebuilt(child) for key, child in node.items()}


def _mapped(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as read-only views of one memory map (its header: 8 bytes of length, then
    JSON naming each tensor's dtype, shape and byte range after the header)."""
    import json

    raw = np.memmap(path, np.uint8, "r")
    length = int(raw[:8].view("<u8")[0])
    header = json.loads(raw[8 : 8 + length].tobytes())
    header.pop("__metadata__", None)
    data = raw[8 + length :]
    return {
        name: data[spec["data_offsets"][0] : spec["data_offsets"][1]].view(DTYPES[spec["dtype"]]).reshape(spec["shape"])
        for name, spec in header.items()
    }


def write(path: Path, params: Any) -> None:
    """Store `params` (nested dicts of arrays) at `path` complete or not at all, then prune to the newest `KEEP`."""
    import jax
    from safetensors.numpy import save_file

    from neo.storage import keep_newest

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if sum(leaf.size * leaf.dtype.itemsize for _, leaf in leaves) > MAX_BYTES:
        return
    if any(np.dtype(leaf.dtype) not in {np.dtype(d) for d in DTYPES.values()} for _, leaf in leaves):
        return
    flat = _flat(params)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(flat, tmp)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        keep_newest(path.parent, "*.safetensors", KEEP)
    except OSError:
        return


def _flat(params: Any) -> dict[str, np.ndarray]:
    """Each array by its "a/b/c" name; a quantized weight's fields as "name/Int8Weight.q" and so on (`_rebuilt`)."""
    import jax

    from neo.model.quantize import is_low_bit

    flat = {}
    for keys, leaf in jax.tree_util.tree_flatten_with_path(params, is_leaf=is_low_bit)[0]:
        name = "/".join(str(key.key) for key in keys)
        if is_low_bit(leaf):
            flat.update({f"{name}/{type(leaf).__name__}.{f}": np.asarray(v) for f, v in leaf._asdict().items()})
        else:
            flat[name] = np.asarray(leaf)
    return flat
