"""HF GPT-Neo directories <-> neo run directories, and GPT-Neo mesh-tf checkpoints -> run directories (no pickle).

The tensor mappings themselves are `neo.model.hf` and `neo.model.mtf`; this module reads and writes the directories
around them. A run directory written here holds `config.yaml`, a params-only checkpoint at step 0 and the tokenizer,
so `neo sample`, `neo eval`, `neo convert to-hf` and `neo train` (fine-tuning) all accept it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from neo import storage
from neo.errors import CheckpointError, DataError
from neo.model.config import ModelConfig

WEIGHTS = "model.safetensors"
HF_REQUIRED = ("vocab_size", "max_position_embeddings", "hidden_size", "num_heads", "num_layers")  # see config_from_hf


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
    return os.fspath(path) if storage.is_remote(path) else os.path.abspath(path)


def write_run(
    run_dir: str, model_cfg: ModelConfig, params: Any, source: str | os.PathLike[str], tokenizer: str | None
) -> str:
    """A run directory holding a model and no training state yet: config.yaml, a params-only step-0 checkpoint."""
    from neo.config import NeoConfig, to_yaml
    from neo.train.checkpoint import Checkpoints

    cfg = NeoConfig(model=model_cfg)
    cfg.validate()
    storage.makedirs(run_dir)
    storage.write_atomic(storage.join(run_dir, "config.yaml"), to_yaml(cfg))
    ckpts = Checkpoints(run_dir, async_save=False)
    ckpts.save(0, None, {"source": _absolute(source)}, params=jax.tree.map(np.asarray, params))
    ckpts.close()
    if tokenizer is not None and storage.isfile(tokenizer):
        storage.copy(tokenizer, storage.join(run_dir, "tokenizer.json"))
    return run_dir


def from_hf_dir(hf_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> str:
    """Write a neo run directory from a HF GPT-Neo directory."""
    run_dir = os.fspath(run_dir)
    _check_new(run_dir)
    model_cfg, params = load_hf_dir(hf_dir)
    return write_run(run_dir, model_cfg, params, hf_dir, storage.join(hf_dir, "tokenizer.json"))


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


def to_hf_dir(run_dir: str | os.PathLike[str], hf_dir: str | os.PathLike[str]) -> str:
    """Write a HF GPT-Neo directory (config.json, model.safetensors, tokenizer.json) from a run's latest params; a
    gs:// target is written locally and uploaded."""
    from safetensors.numpy import save_file

    from neo.model.hf import to_hf
    from neo.train.checkpoint import load_run

    hf_dir = os.fspath(hf_dir)
    _check_new(hf_dir)
    cfg, params, _ = load_run(run_dir)
    hf_config, state = to_hf(cfg.model, jax.tree.map(np.asarray, params))
    with storage.staged_dir(hf_dir) as local:
        tmp = os.path.join(local, WEIGHTS + ".tmp")
        save_file(state, tmp, metadata={"format": "pt"})
        os.replace(tmp, os.path.join(local, WEIGHTS))
        tokenizer = storage.join(run_dir, "tokenizer.json")
        if storage.isfile(tokenizer):
            storage.copy(tokenizer, os.path.join(local, "tokenizer.json"))
            hf_config.update(_tokenizer_files(local, tokenizer, cfg.model.n_ctx))
        with open(os.path.join(local, "config.json"), "w") as f:
            f.write(json.dumps(hf_config, indent=2))
    return hf_dir


def _tokenizer_files(local: str, tokenizer: str, n_ctx: int) -> dict[str, int]:
    """Write tokenizer_config.json and generation_config.json for the run's tokenizer (so AutoTokenizer loads the
    folder and `generate` stops at the real end of text, not GPT-2's id 50256); returns the special ids for
    config.json."""
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
    }
    for name, content in (("tokenizer_config.json", tokenizer_config), ("generation_config.json", ids)):
        with open(os.path.join(local, name), "w") as f:
            f.write(json.dumps(content, indent=2))
    return ids
