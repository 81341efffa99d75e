"""HF GPT-Neo directories <-> neo run directories, and GPT-Neo mesh-tf checkpoints -> run directories (no pickle).

The tensor mappings themselves are `neo.model.hf` and `neo.model.mtf`; this module reads and writes the directories
around them. A run directory written here holds `config.yaml`, a params-only checkpoint at step 0 and the tokenizer,
so `neo sample`, `neo eval`, `neo convert to-hf` and `neo train` (fine-tuning) all accept it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jax
import numpy as np

from neo import storage
from neo.errors import CheckpointError, DataError
from neo.model.config import ModelConfig

WEIGHTS = "model.safetensors"
HF_REQUIRED = ("vocab_size", "max_position_embeddings", "hidden_size", "num_heads", "num_layers")  # see config_from_hf
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name, as the Hugging Face hub spells repositories
HUB_FILES = ["config.json", "*.safetensors", WEIGHTS + ".index.json", "tokenizer.json", "vocab.json", "merges.txt"]


def hf_source(spec: str | os.PathLike[str]) -> str:
    """The directory a `from-hf` source names: a local or gs:// directory as given, or a hub id
    (`EleutherAI/gpt-neo-125M`) resolved through the local Hugging Face cache — downloaded into it when the hub is
    reachable, unless HF_HUB_OFFLINE=1."""
    spec = os.fspath(spec)
    if storage.is_remote(spec) or os.path.exists(spec) or not HUB_ID.fullmatch(spec):
        return spec
    from huggingface_hub import snapshot_download

    cache = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
    )  # read now, not at huggingface_hub's import
    get = {"repo_id": spec, "allow_patterns": HUB_FILES, "cache_dir": cache}
    try:
        return snapshot_download(**get, local_files_only=True)
    except Exception:
        pass  # not cached (or only partly): go online
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise DataError(
            f"'{spec}' is not a local directory and not in the Hugging Face cache, and HF_HUB_OFFLINE is set; "
            f"download it once online (hf download {spec}) or pass a model directory"
        )
    _reachable_or_raise(spec)
    try:
        return snapshot_download(**get, etag_timeout=10)
    except Exception as exc:  # not found, gated, network: the same thing to the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"could not fetch '{spec}' from the Hugging Face hub ({first}); check the id") from None


def _reachable_or_raise(spec: str) -> None:
    """The hub client retries for about half a minute on a dead network: probe the endpoint first."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        raise DataError(
            f"'{spec}' is not a local directory and not in the Hugging Face cache, and {host} is unreachable; "
            "pass a model directory, or run once online"
        ) from None


def load_hf_dir(hf_dir: str | os.PathLike[str]) -> tuple[ModelConfig, Any]:
    """A HF GPT-Neo directory (config.json + model.safetensors, or the shards a `model.safetensors.index.json`
    lists; local or gs://...) as a neo model config and params."""
    from neo.model.hf import from_hf

    hf_dir = os.fspath(hf_dir)
    config_path = storage.join(hf_dir, "config.json")
    if not storage.isfile(config_path):
        raise DataError(f"{hf_dir} has no config.json; pass a Hugging Face GPT-Neo model directory")
    files = _weight_files(hf_dir)
    try:
        hf_config = json.loads(storage.read_text(config_path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{config_path} is not valid JSON ({exc}); re-save the model with save_pretrained") from None
    if not isinstance(hf_config, dict) or hf_config.get("model_type") not in (None, "gpt_neo"):
        kind = hf_config.get("model_type") if isinstance(hf_config, dict) else type(hf_config).__name__
        raise DataError(f"{hf_dir} holds a '{kind}' model; neo converts GPT-Neo models only")
    missing = [k for k in HF_REQUIRED if k not in hf_config]
    if missing:
        raise DataError(f"{config_path} lacks {', '.join(missing)}: it is not a GPT-Neo config.json")
    state: dict[str, Any] = {}
    for weights in files:
        state.update(_read_safetensors(weights))
    return from_hf(hf_config, state)


def _weight_files(hf_dir: str) -> list[str]:
    """model.safetensors, or every shard its index names (each checked present before any is read)."""
    single, index = storage.join(hf_dir, WEIGHTS), storage.join(hf_dir, WEIGHTS + ".index.json")
    if storage.isfile(single):
        return [single]
    if storage.isfile(index):
        try:
            shards = sorted(set(json.loads(storage.read_text(index))["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{index} is not a safetensors index ({exc!r}); download it again") from None
        absent = [s for s in shards if not storage.isfile(storage.join(hf_dir, s))]
        if absent:
            raise DataError(
                f"{hf_dir} lacks {len(absent)} of the {len(shards)} shards its index lists ({', '.join(absent[:3])}"
                f"{', ...' if len(absent) > 3 else ''}); download the missing files"
            )
        return [storage.join(hf_dir, s) for s in shards]
    found = ", ".join(storage.basename(p) for p in storage.listdir(hf_dir)) or "nothing"
    raise DataError(
        f"{hf_dir} has no {WEIGHTS} (found: {found}); neo loads safetensors only — re-save the model with "
        "save_pretrained(..., safe_serialization=True)"
    )


def _read_safetensors(weights: str) -> dict[str, Any]:
    from safetensors.numpy import load_file

    with storage.local_file(weights) as local:
        try:
            return load_file(local)
        except Exception as exc:  # safetensors raises its own error types for a truncated or junk file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(
                f"{weights} is not a readable safetensors file ({first}); download or save it again"
            ) from None


def _check_new(directory: str) -> None:
    if storage.isdir(directory) and storage.listdir(directory):
        raise CheckpointError(f"{directory} is not empty; pass a new run directory")


def _absolute(path: str | os.PathLike[str]) -> str:
    """A local path made absolute; a gs:// URL or a hub id as given."""
    return os.path.abspath(path) if not storage.is_remote(path) and os.path.exists(path) else os.fspath(path)


def write_run(
    run_dir: str, model_cfg: ModelConfig, params: Any, source: str | os.PathLike[str], tokenizer: str | None
) -> str:
    """A run directory holding a model and no training state yet: config.yaml, a params-only step-0 checkpoint, and
    the tokenizer (tokenizer.json text) when there is one."""
    from neo.config import NeoConfig, to_yaml
    from neo.train.checkpoint import Checkpoints

    cfg = NeoConfig(model=model_cfg)
    cfg.validate()
    storage.makedirs(run_dir)
    storage.write_atomic(storage.join(run_dir, "config.yaml"), to_yaml(cfg))
    ckpts = Checkpoints(run_dir, async_save=False)
    ckpts.save(0, None, {"source": _absolute(source)}, params=jax.tree.map(np.asarray, params))
    ckpts.close()
    if tokenizer is not None:
        storage.write_atomic(storage.join(run_dir, "tokenizer.json"), tokenizer)
    return run_dir


def from_hf_dir(hf_source_spec: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> str:
    """Write a neo run directory from a HF GPT-Neo directory or hub id, its tokenizer included."""
    run_dir = os.fspath(run_dir)
    _check_new(run_dir)
    hf_dir = hf_source(hf_source_spec)
    model_cfg, params = load_hf_dir(hf_dir)
    return write_run(run_dir, model_cfg, params, hf_source_spec, hf_tokenizer_json(hf_dir))


def hf_tokenizer_json(hf_dir: str) -> str | None:
    """The model's tokenizer as tokenizer.json text: its own file, or GPT-2's byte-level BPE built from `vocab.json`
    and `merges.txt` (what GPT-Neo's hub repositories ship); None when it has neither."""
    own = storage.join(hf_dir, "tokenizer.json")
    if storage.isfile(own):
        return storage.read_text(own)
    vocab, merges = storage.join(hf_dir, "vocab.json"), storage.join(hf_dir, "merges.txt")
    if not (storage.isfile(vocab) and storage.isfile(merges)):
        return None
    from tokenizers import ByteLevelBPETokenizer

    with storage.local_file(vocab) as v, storage.local_file(merges) as m:
        return ByteLevelBPETokenizer(v, m).to_str()


def from_mtf_dir(ckpt_prefix: str, config_json: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> str:
    """Write a neo run directory from a GPT-Neo mesh-tensorflow checkpoint and its JSON config.

    The checkpoint itself is read by TensorFlow (its own gs:// support reaches Cloud Storage, not an emulator)."""
    from neo.model.mtf import from_mtf

    run_dir = os.fspath(run_dir)
    _check_new(run_dir)
    config_json = os.fspath(config_json)
    if not storage.isfile(config_json):
        raise DataError(f"{config_json} does not exist; pass the GPT-Neo JSON config the checkpoint was trained with")
    try:
        original = json.loads(storage.read_text(config_json))
    except json.JSONDecodeError as exc:
        raise DataError(f"{config_json} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    model_cfg, params = from_mtf(ckpt_prefix, original)
    return write_run(run_dir, model_cfg, params, ckpt_prefix, None)


def to_hf_dir(run_dir: str | os.PathLike[str], hf_dir: str | os.PathLike[str], max_shard_bytes: int = 5 * 10**9) -> str:
    """Write a HF GPT-Neo directory (config.json, safetensors weights, tokenizer files) from a run's latest params;
    a gs:// target is written locally and uploaded."""
    from neo.model.hf import to_hf
    from neo.train.checkpoint import load_run

    hf_dir = os.fspath(hf_dir)
    _check_new(hf_dir)
    cfg, params, _ = load_run(run_dir)
    hf_config, state = to_hf(cfg.model, jax.tree.map(np.asarray, params))
    with storage.staged_dir(hf_dir) as local:
        _write_safetensors(local, state, max_shard_bytes)
        tokenizer = storage.join(run_dir, "tokenizer.json")
        if storage.isfile(tokenizer):
            storage.copy(tokenizer, os.path.join(local, "tokenizer.json"))
            hf_config.update(_tokenizer_files(local, tokenizer, cfg.model.n_ctx, cfg.model.n_vocab))
        with open(os.path.join(local, "config.json"), "w") as f:
            f.write(json.dumps(hf_config, indent=2))
    return hf_dir


def parse_size(text: str) -> int:
    """'5GB' / '500MB' / '20KB' / a plain byte count -> bytes (decimal units, as transformers' max_shard_size)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)\s*", text.upper())
    if not found or float(found.group(1)) <= 0:
        raise DataError(f"--max-shard-size {text!r} is not a size; write e.g. 5GB, 500MB or 20KB")
    scale = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9}
    return int(float(found.group(1)) * scale.get(found.group(2), 10**12))


def _write_safetensors(local: str, state: dict[str, np.ndarray], max_shard_bytes: int) -> None:
    """model.safetensors, or `model-0000k-of-0000n.safetensors` shards of at most `max_shard_bytes` each (a tensor
    larger than that gets a shard of its own) plus the `model.safetensors.index.json` transformers reads."""
    from safetensors.numpy import save_file

    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, array in state.items():
        if shards[-1] and size + array.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = array
        size += array.nbytes
    names = (
        [WEIGHTS]
        if len(shards) == 1
        else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    )
    for name, shard in zip(names, shards, strict=True):
        tmp = os.path.join(local, name + ".tmp")
        save_file(shard, tmp, metadata={"format": "pt"})
        os.replace(tmp, os.path.join(local, name))
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(a.nbytes for a in state.values())},
            "weight_map": {key: name for name, shard in zip(names, shards, strict=True) for key in shard},
        }
        with open(os.path.join(local, WEIGHTS + ".index.json"), "w") as f:
            f.write(json.dumps(index, indent=2))


def _tokenizer_files(local: str, tokenizer: str, n_ctx: int, n_vocab: int) -> dict[str, int]:
    """Write tokenizer_config.json and generation_config.json for the run's tokenizer (so AutoTokenizer loads the
    folder, `generate` stops at the real end of text, not GPT-2's id 50256, and never picks the ids a padded
    vocabulary has beyond the tokenizer's, as `neo sample` never does); returns the special ids for config.json."""
    from neo.data.tokenizer import EOS_TOKEN, load_tokenizer, pad_id

    tok = load_tokenizer(tokenizer)
    eos = tok.token_to_id(EOS_TOKEN)
    if eos is None:  # a tokenizer without <|endoftext|>: nothing to declare
        return {}
    pad = pad_id(tok)
    ids = {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": pad if pad is not None else eos}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": tok.id_to_token(ids["pad_token_id"]),
        "model_max_length": n_ctx,
        "clean_up_tokenization_spaces": False,  # decode exactly as `neo sample` does
    }
    generation = {**ids, "suppress_tokens": list(range(tok.get_vocab_size(), n_vocab)) or None}
    for name, content in (("tokenizer_config.json", tokenizer_config), ("generation_config.json", generation)):
        with open(os.path.join(local, name), "w") as f:
            f.write(json.dumps(content, indent=2))
    return ids
