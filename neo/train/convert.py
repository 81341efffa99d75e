"""HF GPT-Neo directories <-> neo run directories, and GPT-Neo mesh-tf checkpoints -> run directories (no pickle).

The tensor mappings themselves are `neo.model.hf` and `neo.model.mtf`; this module reads and writes the directories
around them. A run directory written here holds `config.yaml`, a params-only checkpoint at step 0 and the tokenizer,
so `neo sample`, `neo eval`, `neo convert to-hf` and `neo train` (fine-tuning) all accept it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from neo.errors import CheckpointError, DataError
from neo.model.config import ModelConfig

WEIGHTS = "model.safetensors"


def load_hf_dir(hf_dir: str | Path) -> tuple[ModelConfig, Any]:
    """A HF GPT-Neo directory (config.json + model.safetensors) as a neo model config and params."""
    from safetensors.numpy import load_file

    from neo.model.hf import from_hf

    hf_dir = Path(hf_dir)
    config_path, weights = hf_dir / "config.json", hf_dir / WEIGHTS
    if not config_path.is_file():
        raise DataError(f"{hf_dir} has no config.json; pass a Hugging Face GPT-Neo model directory")
    if not weights.is_file():
        found = ", ".join(sorted(p.name for p in hf_dir.iterdir())) or "nothing"
        raise DataError(
            f"{hf_dir} has no {WEIGHTS} (found: {found}); neo loads safetensors only — re-save the model with "
            "save_pretrained(..., safe_serialization=True)"
        )
    hf_config = json.loads(config_path.read_text())
    if hf_config.get("model_type") not in (None, "gpt_neo"):
        raise DataError(f"{hf_dir} holds a '{hf_config.get('model_type')}' model; neo converts GPT-Neo models only")
    return from_hf(hf_config, load_file(str(weights)))


def _check_new(run_dir: Path) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        raise CheckpointError(f"{run_dir} is not empty; pass a new run directory")


def write_run(run_dir: Path, model_cfg: ModelConfig, params: Any, source: Path, tokenizer: Path | None) -> Path:
    """A run directory holding a model and no training state yet: config.yaml, a params-only step-0 checkpoint."""
    from neo.config import NeoConfig, to_yaml
    from neo.train.checkpoint import Checkpoints

    cfg = NeoConfig(model=model_cfg)
    cfg.validate()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    ckpts = Checkpoints(run_dir, async_save=False)
    ckpts.save(0, None, {"source": str(source.absolute())}, params=jax.tree.map(np.asarray, params))
    ckpts.close()
    if tokenizer is not None and tokenizer.is_file():
        shutil.copyfile(tokenizer, run_dir / "tokenizer.json")
    return run_dir


def from_hf_dir(hf_dir: str | Path, run_dir: str | Path) -> Path:
    """Write a neo run directory from a HF GPT-Neo directory."""
    _check_new(Path(run_dir))
    model_cfg, params = load_hf_dir(hf_dir)
    return write_run(Path(run_dir), model_cfg, params, Path(hf_dir), Path(hf_dir) / "tokenizer.json")


def from_mtf_dir(ckpt_prefix: str, config_json: str | Path, run_dir: str | Path) -> Path:
    """Write a neo run directory from a GPT-Neo mesh-tensorflow checkpoint and its JSON config."""
    from neo.model.mtf import from_mtf

    _check_new(Path(run_dir))
    config_json = Path(config_json)
    if not config_json.is_file():
        raise DataError(f"{config_json} does not exist; pass the GPT-Neo JSON config the checkpoint was trained with")
    try:
        original = json.loads(config_json.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{config_json} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    model_cfg, params = from_mtf(ckpt_prefix, original)
    return write_run(Path(run_dir), model_cfg, params, Path(ckpt_prefix), None)


def to_hf_dir(run_dir: str | Path, hf_dir: str | Path) -> Path:
    """Write a HF GPT-Neo directory (config.json, model.safetensors, tokenizer.json) from a run's latest params."""
    from safetensors.numpy import save_file

    from neo.model.hf import to_hf
    from neo.train.checkpoint import load_run

    hf_dir = Path(hf_dir)
    _check_new(hf_dir)
    cfg, params, _ = load_run(run_dir)
    hf_config, state = to_hf(cfg.model, jax.tree.map(np.asarray, params))
    hf_dir.mkdir(parents=True, exist_ok=True)
    tmp = hf_dir / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(hf_dir / WEIGHTS)
    (hf_dir / "config.json").write_text(json.dumps(hf_config, indent=2))
    tokenizer = Path(run_dir) / "tokenizer.json"
    if tokenizer.is_file():
        shutil.copyfile(tokenizer, hf_dir / "tokenizer.json")
    return hf_dir
