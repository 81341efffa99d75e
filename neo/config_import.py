"""Turn an original GPT-Neo JSON config (EleutherAI/gpt-neo `configs/*.json`) into neo's Hydra overrides.

`neo config import CONFIG.json` prints the overrides; the model presets under `neo/conf/model/` that carry GPT-Neo's
recipes (`model=xl`, ...) are exactly these overrides minus the mesh (tests check that). Keys are mapped by meaning,
not only by name: where GPT-Neo leaves a key out, its own default is written when it differs from neo's (e.g. an
absent `scale_by_depth` is False there, and an absent `lr_decay_end` is `train_steps`). Every key that has no neo
equivalent is returned with the reason and, where there is one, what to use instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from neo.errors import ConfigError
from neo.model.config import ModelConfig, MoEParams
from neo.model.mtf import RENAMED

# GPT-Neo key -> neo key, where only the name's section differs.
_DIRECT: dict[str, str] = {
    "lr": "optimizer.lr",
    "lr_decay": "optimizer.lr_decay",
    "lr_decay_end": "optimizer.lr_decay_end",
    "warmup_steps": "optimizer.warmup_steps",
    "beta1": "optimizer.beta1",
    "beta2": "optimizer.beta2",
    "epsilon": "optimizer.epsilon",
    "ada_epsilon1": "optimizer.adafactor_epsilon1",
    "weight_decay": "optimizer.weight_decay",
    "gradient_clipping": "optimizer.gradient_clipping",
    "train_batch_size": "train.batch_size",
    "train_steps": "train.steps",
    "eval_steps": "train.eval_steps",
    "tokens_per_mb_per_replica": "train.tokens_per_mb_per_replica",
    "mesh_shape": "mesh.shape",
    "layout": "mesh.layout",
}
_MODEL_KEYS = {f.name for f in fields(ModelConfig)} - {"moe_params", "remat_policy", "attention_impl"}
_MOE_KEYS = {f.name for f in fields(MoEParams)}
_MOE_ALIASES = {"moe_dropout_rate": "dropout_rate"}

# What GPT-Neo does when a key is absent, where that differs from neo's default.
_GPTNEO_DEFAULTS: dict[str, Any] = {"scale_by_depth": False, "recompute_grad": False}

_DATA_HINT = "pass data.dir=DIR (a directory written by `neo data encode`)"
# Keys with no neo equivalent -> why, and what to use instead.
_UNMAPPED: dict[str, str] = {
    "model_path": "where GPT-Neo kept checkpoints; pass --run-dir DIR",
    "iterations": "TPUEstimator steps per host loop; neo logs every train.log_every steps",
    "eval_batch_size": "neo evaluates in batches of train.batch_size",
    "predict_batch_size": "neo samples with `neo sample --num-samples`",
    "predict_steps": "GPT-Neo's prediction batches per checkpoint; neo's train.predict_steps counts sampled tokens",
    "ada_epsilon2": "Adafactor's parameter-scale floor: optax fixes it at 1e-3 (GPT-Neo's default)",
    "eval_tasks": "use `neo eval RUN_DIR --tasks ...`",
    "model": "GPT-Neo's only model class; neo has one too",
    "input_fn": "neo's pipeline picks the reader from data.mode",
    "no_dataset": _DATA_HINT,
    **{k: _DATA_HINT for k in ("path", "eval_path", "train_path", "tokenizer_path", "tokenizer_is_pretrained")},
    **{k: _DATA_HINT + "; `data encode` records it in the dataset card" for k in ("eos_id", "padding_id")},
}
# Keys neo reads as GPT-Neo wrote them, commas and all (neo.config quotes them for Hydra).
_GPTNEO_STRINGS = ("mesh.shape", "mesh.layout")
# Keys any GPT-Neo model config has: a JSON object without one of them is something else (e.g. a dataset config).
_REQUIRED = ("n_embd", "n_layer", "n_head")


@dataclass(frozen=True)
class Unmapped:
    """A GPT-Neo key neo cannot take, and why / what to do instead."""

    key: str
    reason: str


@dataclass
class Imported:
    """The overrides equivalent to one GPT-Neo config, in a stable order, and the keys left out."""

    values: dict[str, Any] = field(default_factory=dict)  # "model.n_embd" -> 2048; "optimizer" -> "adam" (a group)
    unmapped: list[Unmapped] = field(default_factory=list)

    def overrides(self) -> list[str]:
        """Hydra command-line overrides, e.g. `optimizer.lr=0.0002`, `model.attention_types=[[[global],24]]`."""
        return [
            f"{key}={value if key in _GPTNEO_STRINGS else format_value(value)}" for key, value in self.values.items()
        ]

    def nested(self) -> dict[str, Any]:
        """The values as nested sections (`{"model": {...}, ...}`), group choices left out."""
        out: dict[str, Any] = {}
        for key, value in self.values.items():
            if "." not in key:
                continue
            node = out
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out

    def preset_yaml(self, source: str) -> str:
        """A model preset in the format of `neo/conf/model/*.yaml` (drop it there to use it as `model=NAME`)."""
        from omegaconf import OmegaConf

        head = [
            "# @package _global_",
            f"# Imported by `neo config import` from {source}.",
        ]
        if "optimizer" in self.values:
            head += ["defaults:", f"  - override /optimizer: {self.values['optimizer']}", "  - _self_"]
        return "\n".join(head) + "\n" + OmegaConf.to_yaml(self.nested())


def import_config(params: Mapping[str, Any]) -> Imported:
    """Map a parsed GPT-Neo config to neo keys. Raises ConfigError if it is not a GPT-Neo model config."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"a GPT-Neo config is a JSON object, got a JSON {type(params).__name__}")
    missing = [k for k in _REQUIRED if k not in params]
    if missing:
        raise ConfigError(
            f"not a GPT-Neo model config (no {', '.join(missing)}); pass one of GPT-Neo's configs/*.json model configs"
        )
    params = {**{k: v for k, v in _GPTNEO_DEFAULTS.items() if k not in params}, **params}
    if "lr_decay_end" not in params and "train_steps" in params:
        params["lr_decay_end"] = params["train_steps"]  # GPT-Neo decays until train_steps when no end is given
    result = Imported()
    for key in sorted(params):
        value = params[key]
        if key == "opt_name":
            result.values["optimizer"] = str(value).lower()
        elif key == "recompute_grad":
            result.values["model.remat_policy"] = "full" if value else "none"
        elif key in _DIRECT:
            result.values[_DIRECT[key]] = value
        elif RENAMED.get(key, key) in _MODEL_KEYS:
            result.values[f"model.{RENAMED.get(key, key)}"] = value
        elif key == "moe_params" and isinstance(value, Mapping):
            _moe(value, result)
        elif key == "datasets":
            _datasets(value, result)
        elif key in _UNMAPPED:
            result.unmapped.append(Unmapped(key, _UNMAPPED[key]))
        else:
            result.unmapped.append(Unmapped(key, "no neo equivalent"))
    result.values = dict(sorted(result.values.items(), key=lambda kv: _neo_order(kv[0])))
    return result


def import_file(path: str) -> Imported:
    """`import_config` of a JSON file; every user error names the file."""
    params = load(path)
    try:
        return import_config(params)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load(path: str) -> dict[str, Any]:
    """Read a GPT-Neo JSON config (local path or gs://...); one-line ConfigError when it is missing or not JSON."""
    from neo import storage

    if not storage.isfile(path):  # a bad URL raises StorageError (one line) here
        raise ConfigError(f"no GPT-Neo config file at {path}; pass the path of a configs/*.json file")
    try:
        text = storage.read_text(path)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file; pass a GPT-Neo configs/*.json file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); pass a GPT-Neo configs/*.json"
        ) from None


def format_value(value: Any) -> str:
    """A value in Hydra's override grammar: lists in brackets, strings quoted when they hold special characters."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in ("true", "false", "null"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:+/-]*$")

_SECTION_ORDER = ("model", "optimizer", "train", "data", "mesh")


def _neo_order(key: str) -> tuple[int, int, str]:
    """Output order: model, optimizer (the group choice first), train, data, mesh; alphabetical within each."""
    section = key.split(".")[0]
    return _SECTION_ORDER.index(section), "." in key, key


def _moe(value: Mapping[str, Any], result: Imported) -> None:
    for sub, v in value.items():
        name = _MOE_ALIASES.get(sub, sub)
        if name in _MOE_KEYS:
            result.values[f"model.moe_params.{name}"] = v
        else:
            result.unmapped.append(Unmapped(f"moe_params.{sub}", "no neo equivalent"))


def _datasets(value: Any, result: Imported) -> None:
    """GPT-Neo's `[[name, stitch, mode, weight], ...]`: the sampling carries over, the names cannot."""
    entries = value if isinstance(value, list) else [value]
    full = [e for e in entries if isinstance(e, list) and len(e) == 4]
    if full and len(full) == len(entries):
        stitches, modes = {e[1] for e in full}, {e[2] for e in full}
        if len(stitches) == 1 and len(modes) == 1:
            result.values["data.mode"] = modes.pop()
            result.values["data.stitch"] = stitches.pop()
    for entry in entries:
        name = entry[0] if isinstance(entry, list) and entry else entry
        hint = _DATA_HINT if len(entries) == 1 else _DATA_HINT + " and data.datasets=[{dir: DIR, weight: W}, ...]"
        result.unmapped.append(Unmapped(f"datasets: {name}", hint))
