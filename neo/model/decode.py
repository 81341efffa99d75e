"""Incremental decoding: prefill the prompt into a KV cache, then one token per step.

Prompts of different lengths share a batch by left-padding to a power-of-two bucket; each row keeps its own
positions (0 at its first real token) and its padding is masked out of every attention, so a batched row equals
its unbatched self. Global layers cache every slot, local layers a ring buffer of their window only. The step
functions are jitted with the cache index as a traced scalar: one compile per (batch, bucket, cache length), never
one per token. The model only reads the cache and returns each chunk's entries; a second jitted call writes them
into the donated cache, where XLA updates the slot in place (in one program with the reads, XLA CPU copied the
whole cache every step). Each step picks its token on the device and takes the previous step's token as a device
array, so the next step is dispatched before the host reads (and streams) the current token: no host round trip
per token.

With a mesh and logical-axis rules (see neo.parallel), parameters and cache are placed with their logical shardings
(the cache by batch and heads, and its slots by memory_length where the layout maps it) and every step runs under
the mesh, exactly as training lays the model out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from neo.errors import ConfigError
from neo.model.attention import BF16_BITS, CACHE_AXES, Cache, write_cache
from neo.model.common import dtype_of
from neo.model.config import DecodingConfig, ModelConfig
from neo.model.quantize import held_as, quantize_params
from neo.model.transformer import GPTNeo
from neo.parallel.layout import Rules, axis_ways
from neo.parallel.mesh import placement


def _layer_cache(
    cfg: ModelConfig, kind: str, batch: int, length: int, lead: tuple[int, ...], zeros: Callable, dtype: Any
) -> Cache:
    if kind == "none":
        return {}
    slots = min(cfg.window_size, length) if kind == "local" else length
    kv = (*lead, batch, cfg.n_head, slots, cfg.head_dim)
    return {
        "k": zeros(kv, dtype),
        "v": zeros(kv, dtype),
        "pos": zeros((*lead, batch, slots), jnp.int32),
        "valid": zeros((*lead, batch, slots), bool),
    }


def init_cache(
    cfg: ModelConfig, batch: int, length: int, zeros: Callable = jnp.zeros, dtype: Any = None
) -> list[Cache]:
    """An empty cache for `length` total slots (prompt bucket + new tokens), shaped like the layer stack; `zeros`
    makes each buffer (np.zeros: on the host). Keys and values are held as `dtype` (default: `kv_dtype(cfg)`)."""
    dtype = dtype or kv_dtype(cfg)
    kinds = [kind for kind, _ in cfg.layer_kinds()]
    if not cfg.scan_layers:
        return [_layer_cache(cfg, kind, batch, length, (), zeros, dtype) for kind in kinds]
    period = cfg.scan_period()
    lead = (cfg.n_layer // period,)
    return [_layer_cache(cfg, kind, batch, length, lead, zeros, dtype) for kind in kinds[:period]]


def kv_dtype(cfg: ModelConfig, params: Any = None) -> Any:
    """How the KV cache holds keys and values: as bfloat16 (its bits, `BF16_BITS`) for a bfloat16 model and for
    weights held in fewer bytes (`--weights bfloat16 | int8`), else in the model's precision. Every decoding step
    reads the whole cache: at 384 slots a float32 one is ~23 MiB per neo_125M step, 1/5 of its int8 weights."""
    precision = dtype_of(cfg.precision)
    low_bit = params is not None and held_as(params) != "float32"
    return BF16_BITS if low_bit or precision == jnp.bfloat16 else precision


def cache_axes(cache: list[Cache]) -> list[dict[str, tuple[str | None, ...]]]:
    """Logical axis names of every cache entry (a scanned stack has a leading `layers` axis)."""
    return [
        {n: ("layers",) * (a.ndim - len(CACHE_AXES[n])) + CACHE_AXES[n] for n, a in layer.items()} for layer in cache
    ]


def placed_cache(
    cfg: ModelConfig, batch: int, length: int, mesh: Mesh | None, rules: Rules | None, dtype: Any = None
) -> list[Cache]:
    """`init_cache` (keys and values held as `dtype`), created directly in its logical shardings when a mesh is given
    (batch and heads split).

    Raises a one-line LayoutError when the layout does not divide a cache (e.g. memory_length over a local window).
    """
    from neo.parallel.layout import validate_layout

    if mesh is None:  # zeros made on the host: eager `jnp.zeros` would compile a program per shape
        return jax.device_put(init_cache(cfg, batch, length, zeros=np.zeros, dtype=dtype))
    make = partial(init_cache, cfg, batch, length, dtype=dtype)
    abstract = jax.eval_shape(make)
    validate_layout(abstract, mesh, rules or (), names=cache_axes(abstract))
    names = [{n: PartitionSpec(*axes) for n, axes in layer.items()} for layer in cache_axes(abstract)]
    return jax.jit(make, out_shardings=nn.logical_to_mesh_sharding(names, mesh, rules or ()))()


class Steps(NamedTuple):
    forward: Callable  # (params, tokens, positions, valid, cache, index) -> (last logits [b, vocab], cache)
    step: Callable  # (..., key, temperature, top_k, top_p, vocab, greedy=) -> (token [b, 1], next positions, cache)
    # both are two dispatches: the jitted model call (reads the cache), then `write` (the cache donated)


_STEPS: dict[Any, Steps] = {}


def last_logits(cfg: ModelConfig) -> Callable:
    """`(params, tokens, positions, valid, cache) -> (logits of each row's last position [b, vocab], the chunk's cache
    entries)`: the model call of a decoding step, which only reads the cache (`write_cache` stores the entries)."""
    model = GPTNeo(cfg)

    def logits_and_entries(params, tokens, positions, valid, cache):
        return model.apply({"params": params}, tokens, positions, valid, cache, method=GPTNeo.decode)

    return logits_and_entries


def _build_steps(cfg: ModelConfig, cached: bool) -> Steps:
    """The forward and step programs of `cfg`; `cached` (one device): through the program cache."""
    logits_and_entries = last_logits(cfg)

    def choose(params, tokens, positions, valid, cache, index, key, temperature, top_k, top_p, vocab, *, greedy):
        logits, entries = logits_and_entries(params, tokens, positions, valid, cache)
        logits = jnp.where(jnp.arange(logits.shape[-1]) < vocab, logits, -jnp.inf)  # ids the tokenizer has
        if greedy:
            chosen = greedy_choice(logits)
        else:
            chosen = _sample(logits, jax.random.fold_in(key, index), temperature, top_k, top_p)
        return chosen.astype(jnp.int32)[:, None], positions[:, -1:] + 1, entries

    def write(cache, entries, index):
        return [write_cache(c, e, index) if c else c for c, e in zip(cache, entries, strict=True)]

    if cached:
        from neo.infer.program_cache import CachedProgram

        logits_jit = CachedProgram(logits_and_entries, "forward", repr(cfg))
        choose_jit = CachedProgram(choose, "step", repr(cfg), static_argnames=("greedy",))
        write_jit = CachedProgram(write, "write_cache", repr(cfg), donate_argnums=(0,))
    else:
        logits_jit, choose_jit = jax.jit(logits_and_entries), jax.jit(choose, static_argnames="greedy")
        write_jit = jax.jit(write, donate_argnums=0)  # in place: the update is the donated cache's only use

    def forward(params, tokens, positions, valid, cache, index):
        logits, entries = logits_jit(params, tokens, positions, valid, cache)
        return logits, write_jit(cache, entries, index)

    def step(params, tokens, positions, valid, cache, index, key, temperature, top_k, top_p, vocab, *, greedy):
        args = (params, tokens, positions, valid, cache, index, key, temperature, top_k, top_p, vocab)
        chosen, next_positions, entries = choose_jit(*args, greedy=greedy)
        return chosen, next_positions, write_jit(cache, entries, index)

    return Steps(forward, step)


def steps_for(cfg: ModelConfig, mesh: Mesh | None = None, rules: Rules | None = None) -> Steps:
    """The jitted forward and step functions, built once per (config, mesh, rules): the logical constraints inside
    the model are resolved at trace time, so each placement needs its own trace."""
    from neo.infer import program_cache

    key = (repr(cfg), mesh, rules)
    if key not in _STEPS:
        _STEPS[key] = _build_steps(cfg, cached=mesh is None and program_cache.enabled())
    return _STEPS[key]


def forward_fn(cfg: ModelConfig) -> Callable:
    """jit(params, tokens, positions, valid, cache, index) -> (last-position logits, cache), cached per config.

    A multi-token chunk is a prefill into an empty cache at `index`; a one-token chunk is a decode step.
    """
    return steps_for(cfg).forward


def greedy_choice(logits: jax.Array) -> jax.Array:
    """Each row's most likely id (the first of equals, as `argmax`) [batch], as two plain reductions: XLA CPU runs
    argmax's (value, index) reduction element by element, 2x slower at batch 1 and 4x at batch 8 over a 50k vocab."""
    best = jnp.max(logits, axis=-1, keepdims=True)
    ids = jnp.arange(logits.shape[-1], dtype=jnp.int32)
    first = jnp.min(jnp.where(logits == best, ids, logits.shape[-1]), axis=-1)
    return jnp.minimum(first, logits.shape[-1] - 1)  # a NaN row matches nothing: still a valid id


def _sample(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array):
    """One token per row from float32 logits [batch, vocab]: temperature, top-k (0 = off), top-p (1 = off)."""
    logits = logits.astype(jnp.float32) / temperature
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]
    kth = jnp.take_along_axis(ordered, jnp.full((logits.shape[0], 1), jnp.maximum(top_k, 1) - 1), axis=-1)
    logits = jnp.where((top_k > 0) & (logits < kth), -jnp.inf, logits)
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each candidate
    cutoff = jnp.min(jnp.where(before < top_p, ordered, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)


sample_logits = jax.jit(_sample)


def seed_key(seed: int) -> np.ndarray:
    """`jax.random.PRNGKey(seed)` as raw uint32 data, made on the host: on the device it compiles a program (~0.1 s of
    every `neo sample`). Threefry seeds a key with [high 32 bits, low 32 bits] of the seed."""
    if 0 <= seed < 2**32 and jax.config.jax_default_prng_impl == "threefry2x32":
        return np.array([0, seed], np.uint32)
    return np.asarray(jax.random.key_data(jax.random.PRNGKey(seed)), np.uint32)


def bucket(n: int) -> int:
    """Prompt lengths are padded to powers of two (at least 8) so nearby lengths share one compile."""
    return max(8, 1 << (n - 1).bit_length())


def padded_length(n: int) -> int:
    """`n` rounded up for few compiles and little padding: a power of two up to 64, then a multiple of 64 up to 512,
    then of 256 (past 64, padding adds at most ~1/3)."""
    return bucket(n) if n <= 64 else -(-n // 64) * 64 if n <= 512 else -(-n // 256) * 256


def for_decoding(cfg: ModelConfig, params: Any) -> tuple[ModelConfig, Any]:
    """The same model laid out for decoding: layers unrolled and dense weights stored [out, in].

    Scan keeps compile time flat for training, but a scanned decode step threads the whole KV cache through the
    loop carry; unrolled, each layer has its own cache buffer (2.3x faster per token for neo_125M on CPU). With
    `weights_out_first` the few-row products stream each weight in the order XLA CPU reads fastest (see
    `neo.model.common.rows_times_weight`). Each weight is permuted as its logical axis names say, all of them in one
    compiled program (leaf by leaf, the eager transposes and slices cost ~1.5 s of `neo sample`'s start-up).
    """
    if cfg.weights_out_first:
        return cfg, params
    return decoding_config(cfg), _relayout(cfg)(params)


def decoding_config(cfg: ModelConfig) -> DecodingConfig:
    """The config of `cfg`'s decoding layout (see `for_decoding`)."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return DecodingConfig(**{**fields, "scan_layers": False, "remat_policy": "none"})  # no gradients: no remat


_RELAYOUTS: dict[str, Callable[[Any], Any]] = {}


def _relayout(cfg: ModelConfig) -> Callable[[Any], Any]:
    """jit(params -> decoding params) for `cfg`, made once per config."""
    key = repr(cfg)
    if key in _RELAYOUTS:
        return _RELAYOUTS[key]
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    before, after = _axis_names(cfg), _axis_names(DecodingConfig(**fields))  # scanned alike, so both trace fast

    def relayout(params: Any) -> Any:
        def permute(a: Any, was: tuple[str | None, ...], now: tuple[str | None, ...]) -> Any:
            return a if was == now else jnp.transpose(a, [was.index(n) for n in now])

        params = jax.tree.map(permute, params, before, after)
        if not cfg.scan_layers:
            return params
        period = cfg.scan_period()
        flat = {k: v for k, v in params.items() if k != "blocks"}
        for i in range(cfg.n_layer):
            flat[f"h_{i}"] = jax.tree.map(lambda a, r=i // period: a[r], params["blocks"][f"layer_{i % period}"])
        return flat

    _RELAYOUTS[key] = jax.jit(relayout)
    return _RELAYOUTS[key]


def _axis_names(cfg: ModelConfig) -> Any:
    from neo.model.params import abstract_variables

    boxed = abstract_variables(cfg)["params"]
    return jax.tree.map(lambda p: p.names, boxed, is_leaf=lambda p: isinstance(p, nn.Partitioned))


def param_shardings(cfg: ModelConfig, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings of the model's parameters (in the layout `cfg` says) from their logical names.

    Raises a one-line LayoutError when the layout does not divide a tensor (e.g. a vocab not divisible by its axis).
    """
    from neo.model.params import abstract_variables
    from neo.parallel.layout import shardings

    return shardings(abstract_variables(cfg)["params"], mesh, rules)


def batch_multiple(mesh: Mesh | None, rules: Rules | None) -> int:
    """How many ways the batch is split: prompts are padded with dummy rows to a multiple of it."""
    return 1 if mesh is None else axis_ways("batch", rules, mesh.shape)


def generate(
    cfg: ModelConfig,
    params: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    seed: int = 0,
    on_token: Callable[[int, int], None] | None = None,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    vocab_size: int | None = None,
    weights: str | None = None,
) -> list[list[int]]:
    """Continue each prompt; returns the new tokens per prompt (an emitted `eos_id` ends a row and is not included).

    temperature 0 is greedy. `on_token(row, token)` is called for every emitted token as it is produced. With
    `mesh` and `rules`, the model runs sharded as the rules say (greedy output equals the single-device one).
    `vocab_size` (the tokenizer's) keeps the ids a model's padded vocabulary has beyond it from ever being chosen.
    `weights` (float32 | bfloat16 | int8) is how the dense weights and the embedding are stored while decoding
    (see `neo.model.quantize`; one device only for now); None: as `params` hold them.
    """
    longest = _check_request(cfg, prompts, max_new_tokens, temperature, top_k, top_p)
    if max_new_tokens == 0:
        return [[] for _ in prompts]
    held = weights or held_as(params)
    if held != "float32" and mesh is not None:
        raise ConfigError(f"--weights {held} decodes on one device for now; drop --mesh or use --weights float32")
    cfg, params = for_decoding(cfg, nn.meta.unbox(params))
    params = params if weights is None else quantize_params(params, weights)
    rows = len(prompts)
    multiple = batch_multiple(mesh, rules)
    batch, width = -(-rows // multiple) * multiple, bucket(longest)  # dummy rows fill a sharded batch
    tokens, valid, positions = _left_padded(prompts, batch, width)

    steps = steps_for(cfg, mesh, rules)
    greedy = temperature == 0
    vocab = np.int32(cfg.n_vocab if vocab_size is None else min(vocab_size, cfg.n_vocab))
    knobs = (seed_key(seed), np.float32(temperature or 1.0), np.int32(top_k), np.float32(top_p), vocab)
    emit = _Emitter(rows, batch, eos_id, on_token)
    with placement(mesh, rules):
        if mesh is not None:
            params = jax.device_put(params, param_shardings(cfg, mesh, rules or ()))
        # every step reads every slot of a global layer's cache: rounded finely, not to a power of two (a 54-token
        # prompt and 256 new tokens read 320 slots per step, not 512), yet few lengths, so few compiles
        length = padded_length(width + max_new_tokens)
        cache = placed_cache(cfg, batch, length, mesh, rules, kv_dtype(cfg, params))
        chosen, next_pos, cache = steps.step(
            params, tokens, positions, valid, cache, np.int32(0), *knobs, greedy=greedy
        )
        ones = np.ones((batch, 1), bool)
        for step in range(max_new_tokens):
            pending = chosen
            if step < max_new_tokens - 1:  # dispatch the next step before reading this one's token
                index = np.int32(width + step)
                chosen, next_pos, cache = steps.step(
                    params, pending, next_pos, ones, cache, index, *knobs, greedy=greedy
                )
            if emit(np.asarray(pending)[:, 0].tolist()):
                break
    return emit.out


def _check_request(
    cfg: ModelConfig, prompts: list[list[int]], max_new_tokens: int, temperature: float, top_k: int, top_p: float
) -> int:
    """Refuse what cannot be generated (one line each); returns the longest prompt's length."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("generate needs at least one non-empty prompt; pass token ids of the prompt text")
    if max_new_tokens < 0 or temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise ConfigError("sampling needs max_new_tokens >= 0, temperature >= 0, top_k >= 0 and top_p in (0, 1]")
    flat = [t for p in prompts for t in p]
    if min(flat) < 0 or max(flat) >= cfg.n_vocab:
        raise ConfigError(f"prompt token ids must be in [0, {cfg.n_vocab}); the tokenizer does not match the model")
    longest = max(len(p) for p in prompts)
    if not cfg.rotary_emb and longest + max_new_tokens > cfg.n_ctx:
        raise ConfigError(
            f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds model.n_ctx ({cfg.n_ctx}); "
            "shorten the prompt or ask for fewer tokens"
        )
    return longest


def _left_padded(prompts: list[list[int]], batch: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, valid, positions) of [batch, width]: each prompt right-aligned, so every row's next token lands in
    the same column; rows past the prompts are dummies of one token, so no row attends to nothing."""
    tokens = np.zeros((batch, width), np.int32)
    valid = np.zeros((batch, width), bool)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt) :] = prompt
        valid[row, width - len(prompt) :] = True
    valid[len(prompts) :, -1] = True
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
    return tokens, valid, positions


class _Emitter:
    """Collects each row's new tokens until its `eos_id`, calling `on_token(row, token)` for each as it comes."""

    def __init__(self, rows: int, batch: int, eos_id: int | None, on_token: Callable[[int, int], None] | None):
        self.out: list[list[int]] = [[] for _ in range(rows)]
        self.done = np.arange(batch) >= rows  # dummy rows are done from the start
        self.eos_id, self.on_token = eos_id, on_token

    def __call__(self, tokens: list[int]) -> bool:
        """Take one step's token per row; True once every row is done."""
        for row, token in enumerate(tokens):
            if self.done[row]:
                continue
            if self.eos_id is not None and token == self.eos_id:
                self.done[row] = True
                continue
            self.out[row].append(token)
            if self.on_token is not None:
                self.on_token(row, token)
        return bool(self.done.all())
