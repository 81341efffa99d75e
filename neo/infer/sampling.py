"""Text in, text out: load a run's parameters and tokenizer and generate with the model's KV-cache decoder.

Sampling runs on one device unless a mesh is asked for (`mesh_for_sampling`): then the parameters are restored
straight into their logical shardings (no device ever holds the whole model) and decoding runs under the mesh,
with the same mesh and layout machinery as training (neo.parallel).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from neo import storage
from neo.errors import CheckpointError, ConfigError, LayoutError
from neo.model.config import ModelConfig

RUN_MESH = "run"  # `neo sample --mesh run`: the run's own mesh.shape and mesh.layout


@dataclass
class Loaded:
    model: ModelConfig
    params: Any
    tokenizer: Tokenizer
    eos_id: int | None
    mesh: Any = None  # a jax Mesh to decode under, or None for one device
    rules: Any = None  # the logical-axis rules of that mesh


def mesh_for_sampling(source: str | os.PathLike[str], mesh: str | None, layout: str | None = None) -> tuple[Any, Any]:
    """(mesh, rules) to sample `source` with, or (None, None) for one device.

    `mesh` None: one device. `mesh` "run": the run's own mesh config (one device when that mesh has one). Otherwise a
    shape such as "x:2,y:4" over the devices present, with `layout` (default: the run's mesh.layout; empty = the
    batch over every axis). Devices that do not fit raise a one-line LayoutError.
    """
    from neo.parallel.config import MeshConfig
    from neo.parallel.mesh import mesh_and_rules

    if mesh is None:
        if layout:
            raise LayoutError("--layout needs --mesh SHAPE (or --mesh run); without a mesh sampling uses one device")
        return None, None
    source = os.fspath(source)
    run_mesh = None
    if storage.isfile(storage.join(source, "config.yaml")):
        from neo.train.checkpoint import load_snapshot

        run_mesh = load_snapshot(source).mesh
    if mesh == RUN_MESH:
        if run_mesh is None:
            raise LayoutError(f"{source} has no run config with a mesh; pass --mesh SHAPE (e.g. x:1,y:8) instead")
        cfg = run_mesh if layout is None else MeshConfig(name=run_mesh.name, shape=run_mesh.shape, layout=layout)
    else:
        default = run_mesh.layout if run_mesh is not None else ""
        cfg = MeshConfig(name="--mesh", shape=mesh, layout=default if layout is None else layout)
    cfg.validate()
    built, rules = mesh_and_rules(cfg)
    if built.size == 1:
        return None, None
    return built, rules


def load_for_sampling(
    source: str | os.PathLike[str],
    mesh: Any = None,
    rules: Any = None,
    *,
    decoding: bool = False,
    weights: str = "float32",
) -> Loaded:
    """Parameters only (no optimizer state) and the tokenizer stored beside them.

    With `mesh` and `rules` (see `mesh_for_sampling`) the parameters are placed in their logical shardings. With
    `decoding` (the caller only decodes), a run's parameters on one device come in the decoding layout
    (`neo.model.decode.for_decoding`), read from the decoding cache when it has them (`neo.infer.decoding_cache`),
    their dense weights held as `weights` (`neo.model.quantize`; otherwise `generate` converts them).
    """
    from neo.data.tokenizer import eos_id, load_tokenizer

    source = os.fspath(source)
    tok_path = storage.join(source, "tokenizer.json")
    if storage.isfile(storage.join(source, "config.json")) and not storage.isfile(storage.join(source, "config.yaml")):
        from neo.convert import load_hf_dir

        cfg_model, params = load_hf_dir(source)
        if mesh is not None:
            import jax

            from neo.model.decode import param_shardings

            params = jax.device_put(params, param_shardings(cfg_model, mesh, rules))
    else:
        from neo.train.checkpoint import load_run_config

        cfg_model = load_run_config(source).model
        _refuse_masked_lm(source, cfg_model)
        if mesh is None:
            cfg_model, params = _restore_one_device(source, cfg_model, decoding, weights)
        else:
            params = _restore_sharded(source, cfg_model, mesh, rules)
    if not storage.isfile(tok_path):
        raise CheckpointError(f"{source} has no tokenizer.json; copy the tokenizer used for training into it")
    tokenizer = load_tokenizer(tok_path)
    return Loaded(model=cfg_model, params=params, tokenizer=tokenizer, eos_id=eos_id(tokenizer), mesh=mesh, rules=rules)


def _refuse_masked_lm(run_dir: str, cfg: ModelConfig) -> None:
    """A ConfigError, before any weights are read, when the run is a masked LM."""
    if cfg.mlm_training:
        raise ConfigError(
            f"{run_dir} is a masked language model (model.mlm_training=true): it attends in both directions and "
            "cannot continue text left to right; use `neo eval` on it, or sample from a causal run"
        )


def _restore_one_device(run_dir: str, cfg: ModelConfig, decoding: bool, weights: str) -> tuple[ModelConfig, Any]:
    """A run's latest parameters on the default device; with `decoding`, in the decoding layout and held as
    `weights`, through the cache."""
    from neo.infer import decoding_cache
    from neo.model.decode import for_decoding
    from neo.model.quantize import quantize_params
    from neo.train.checkpoint import latest_step, newest_local_step, on_one_device, restore_run_params

    use_cache = decoding and decoding_cache.enabled()
    # A local run's newest step comes from its directory names first, so that a hit never imports orbax. A file is
    # only ever written for the step orbax itself chose (below), so a hit is that same committed checkpoint.
    newest = newest_local_step(run_dir) if use_cache else None
    if newest is not None and (found := _cached(run_dir, newest, cfg, weights)) is not None:
        return found
    step = latest_step(run_dir)
    if use_cache and step != newest and (found := _cached(run_dir, step, cfg, weights)) is not None:  # object store
        return found
    params = restore_run_params(run_dir, on_one_device(cfg), step)[0]
    if not decoding:
        return cfg, params
    cfg, params = for_decoding(cfg, params)
    params = quantize_params(params, weights)
    if use_cache and (path := _cache_path(run_dir, step, cfg, weights)) is not None:
        decoding_cache.write(path, params)
    return cfg, params


def _cache_path(run_dir: str, step: int, cfg: ModelConfig, weights: str) -> Path | None:
    """Where the decoding cache keeps checkpoint `step` of `run_dir` laid out for `cfg`, held as `weights`; None when
    it cannot say."""
    from neo.infer import decoding_cache
    from neo.model.decode import decoding_config
    from neo.train.checkpoint import checkpoint_identity

    identity = checkpoint_identity(run_dir, step)
    return None if identity is None else decoding_cache.cache_path(identity, decoding_config(cfg), weights)


def _cached(run_dir: str, step: int, cfg: ModelConfig, weights: str) -> tuple[ModelConfig, Any] | None:
    """(decoding config, parameters) of checkpoint `step` from the decoding cache, or None."""
    from neo.infer import decoding_cache
    from neo.model.decode import decoding_config

    path = _cache_path(run_dir, step, cfg, weights)
    params = None if path is None else decoding_cache.read(path)
    return None if params is None else (decoding_config(cfg), params)


def _restore_sharded(run_dir: str, cfg: ModelConfig, mesh: Any, rules: Any) -> Any:
    """A run's latest parameters, each device reading only its own shards."""
    import flax.linen as nn
    import jax

    from neo.model.decode import param_shardings
    from neo.model.params import abstract_variables
    from neo.train.checkpoint import restore_run_params

    placed = param_shardings(cfg, mesh, rules)
    unboxed = nn.meta.unbox(abstract_variables(cfg)["params"])
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), unboxed, placed)
    return restore_run_params(run_dir, abstract)[0]


def sample_texts(
    loaded: Loaded,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    stop_at_eos: bool = True,
    on_text: Callable[[int, str], None] | None = None,
    weights: str | None = None,
) -> list[str]:
    """Continuations of each prompt (text only, prompt excluded). `on_text(row, piece)` streams new text."""
    from neo.model.decode import generate

    tok = loaded.tokenizer
    encoded = [tok.encode(p).ids for p in prompts]
    if any(not ids for ids in encoded):
        encoded = [ids or [loaded.eos_id or 0] for ids in encoded]  # an empty prompt starts from end-of-text
    so_far: list[list[int]] = [[] for _ in prompts]
    emitted = ["" for _ in prompts]

    def on_token(row: int, token: int) -> None:
        so_far[row].append(token)
        text = tok.decode(so_far[row])
        if on_text is not None and not text.endswith("\ufffd") and len(text) > len(emitted[row]):
            on_text(row, text[len(emitted[row]) :])
            emitted[row] = text

    outputs = generate(
        loaded.model,
        loaded.params,
        encoded,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=loaded.eos_id if stop_at_eos else None,
        seed=seed,
        on_token=on_token,
        mesh=loaded.mesh,
        rules=loaded.rules,
        vocab_size=max(tok.get_vocab(with_added_tokens=True).values()) + 1,  # a model's can be larger
        weights=weights,
    )
    texts = []
    for row, ids in enumerate(outputs):
        if stop_at_eos and loaded.eos_id is not None and loaded.eos_id in ids:
            ids = ids[: ids.index(loaded.eos_id)]
        text = tok.decode(ids)
        if on_text is not None and len(text) > len(emitted[row]):
            on_text(row, text[len(emitted[row]) :])
        texts.append(text)
    return texts
