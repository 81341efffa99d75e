"""Batched scoring: padded, length-sorted, bucketed batches give each request's own unbatched score, compile once per
width bucket, and give the same scores sharded over 8 simulated devices."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from neo.eval.scoring import _scorer, batches, loglikelihoods, model_inputs, width_for
from neo.parallel.config import MeshConfig
from neo.parallel.mesh import mesh_and_rules
from tests.model.conftest import logits_fn, small

_PARAMS: dict[str, object] = {}


def params_for(cfg) -> object:
    """Random parameters of the model's shapes, made on the host (initialising compiles for many seconds)."""
    import flax.linen as nn

    from neo.model.params import abstract_variables

    if repr(cfg) not in _PARAMS:
        rng = np.random.default_rng(0)
        shapes = nn.meta.unbox(abstract_variables(cfg)["params"])
        _PARAMS[repr(cfg)] = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(a.dtype), shapes)
    return _PARAMS[repr(cfg)]


def _requests(n: int, n_vocab: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ctx = rng.integers(0, n_vocab, size=int(rng.integers(1, 45))).tolist()  # some longer than n_ctx (32)
        out.append((ctx, rng.integers(0, n_vocab, size=int(rng.integers(1, 5))).tolist()))
    return out


def _plain(cfg, params, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """One request alone: the log-probabilities of the continuation's tokens from one full-context forward pass
    (one compile: what follows the request cannot change its logits in a causal model)."""
    tokens, n = model_inputs(ctx, cont, cfg.n_ctx)
    padded = np.zeros((1, cfg.n_ctx), np.int32)
    padded[0, : len(tokens)] = tokens
    logp = np.asarray(jax.nn.log_softmax(logits_fn(cfg)(params, padded), axis=-1))[0, : len(tokens)]
    rows = logp[len(tokens) - n :]
    targets = np.asarray(cont[len(cont) - n :])
    return float(rows[np.arange(n), targets].sum()), bool((rows.argmax(-1) == targets).all())


def test_batched_scores_equal_each_request_alone_and_compile_once_per_bucket() -> None:
    cfg = small(n_vocab=64)
    params = params_for(cfg)
    requests = _requests(19, cfg.n_vocab)
    requests.append(([5], [7, 7, 7]))
    scorer = _scorer(cfg, None, None)
    got = loglikelihoods(cfg, params, requests, batch_size=4)
    for (ctx, cont), (logprob, greedy) in zip(requests, got, strict=True):
        want_logprob, want_greedy = _plain(cfg, params, ctx, cont)
        assert logprob == pytest.approx(want_logprob, abs=1e-4)
        assert greedy == want_greedy
    compiled = scorer._cache_size()
    assert 1 < compiled <= len(batches([len(model_inputs(c, t, cfg.n_ctx)[0]) for c, t in requests], 4))
    assert compiled <= 3 * 2  # widths 8, 16, 32 x continuation positions 8, (16): buckets, not lengths
    loglikelihoods(cfg, params, _requests(9, cfg.n_vocab, seed=1), batch_size=4)
    assert scorer._cache_size() <= 3 * 2  # new lengths, no compile beyond the buckets


def test_greedy_flag_is_true_for_the_models_own_argmax() -> None:
    cfg = small(n_vocab=64)
    params = params_for(cfg)
    ctx = [1, 2, 3, 4]
    cont = []
    for _ in range(3):  # the model's greedy continuation, one token at a time
        padded = np.zeros((1, cfg.n_ctx), np.int32)
        padded[0, : len(ctx + cont)] = ctx + cont
        cont.append(int(np.asarray(logits_fn(cfg)(params, padded))[0, len(ctx + cont) - 1].argmax()))
    (_, greedy), (_, other) = loglikelihoods(
        cfg, params, [(ctx, cont), (ctx, [*cont[:-1], (cont[-1] + 1) % 64])], batch_size=4
    )
    assert greedy and not other


def test_truncation_keeps_the_last_n_ctx_tokens_and_batches_sort_longest_first() -> None:
    tokens, n = model_inputs(list(range(40)), [40, 41], n_ctx=32)
    assert tokens == list(range(9, 41)) and n == 2  # 33 tokens kept, the model reads all but the last
    assert model_inputs([], [1, 2, 3], n_ctx=32) == ([1, 2], 2)  # no context: the first token is not scored
    assert batches([3, 9, 1, 9, 5], 2) == [[1, 3], [4, 0], [2]]
    assert [width_for(n, 2048) for n in (1, 8, 9, 64, 65, 100, 130, 600, 2048)] == [
        8,
        8,
        16,
        64,
        128,
        128,
        192,
        768,
        2048,
    ]
    assert width_for(40, 48) == 48  # capped at n_ctx


def test_sharded_scores_equal_single_device() -> None:
    cfg = small(n_vocab=64)
    params = params_for(cfg)
    requests = _requests(6, cfg.n_vocab, seed=2)
    mesh, rules = mesh_and_rules(MeshConfig(shape="x:2,y:4", layout="batch:x,heads:y,mlp:y"))
    from neo.model.decode import param_shardings

    placed = jax.device_put(params, param_shardings(cfg, mesh, rules))
    got = loglikelihoods(cfg, placed, requests, batch_size=3, mesh=mesh, rules=rules)  # rows: 3 -> 4
    want = loglikelihoods(cfg, params, requests, batch_size=3)
    np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], atol=1e-4)
    assert [g[1] for g in got] == [w[1] for w in want]
