"""Parity with Hugging Face's GPT-Neo: converted checkpoints give the same logits and the same greedy text."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from neo.errors import ConfigError  # noqa: E402
from neo.model.config import ModelConfig  # noqa: E402
from neo.model.decode import generate  # noqa: E402
from neo.model.hf import from_hf, to_hf  # noqa: E402
from neo.model.params import init_params  # noqa: E402
from neo.model.transformer import GPTNeo  # noqa: E402

pytestmark = pytest.mark.hf

SHAPES = [
    dict(hidden_size=32, num_heads=4, num_layers=2, attention_types=[[["global", "local"], 1]], window_size=4),
    dict(hidden_size=48, num_heads=3, num_layers=4, attention_types=[[["local", "global"], 2]], window_size=3),
    dict(hidden_size=32, num_heads=2, num_layers=3, attention_types=[[["local"], 3]], window_size=5),
]


def _hf_model(seed: int, **shape) -> transformers.GPTNeoForCausalLM:
    torch.manual_seed(seed)
    config = transformers.GPTNeoConfig(vocab_size=97, max_position_embeddings=64, **shape)
    model = transformers.GPTNeoForCausalLM(config).eval()
    with torch.no_grad():  # HF inits biases/LN to constants; randomise so the mapping of each tensor is tested
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens).long()).logits.float().numpy()


@pytest.mark.parametrize(("shape", "scan"), [(SHAPES[0], True), (SHAPES[1], True), (SHAPES[2], False)])
def test_from_hf_logits_and_greedy_match(shape: dict, scan: bool) -> None:
    hf = _hf_model(0, **shape)
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    cfg, params = from_hf(hf.config.to_dict(), state, scan_layers=scan)
    tokens = np.random.RandomState(1).randint(0, 97, size=(2, 20)).astype(np.int32)
    ours = np.asarray(GPTNeo(cfg).apply({"params": params}, jnp.asarray(tokens)))
    np.testing.assert_allclose(ours, _hf_logits(hf, tokens), atol=1e-5, rtol=0)

    prompt = tokens[0, :6].tolist()
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, pad_token_id=0)
    ours_tokens = generate(cfg, params, [prompt], max_new_tokens=10, temperature=0)[0]
    assert ours_tokens == ref[0, len(prompt) :].tolist()


def test_round_trip_is_identity_on_every_tensor() -> None:
    hf = _hf_model(2, **SHAPES[1])
    state = {k: v.numpy() for k, v in hf.state_dict().items() if not k.endswith(("attn.bias", "masked_bias"))}
    cfg, params = from_hf(hf.config.to_dict(), state)
    _, back = to_hf(cfg, params)
    assert set(back) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.parametrize("untied", [pytest.param(False, marks=pytest.mark.slow), True])
def test_to_hf_runs_in_transformers(untied: bool) -> None:
    cfg = ModelConfig(
        n_vocab=61,
        n_ctx=32,
        n_embd=32,
        n_head=4,
        n_layer=4,
        attention_types=[[["global", "local"], 2]],
        window_size=3,
        no_weight_tie=untied,
    )
    params = init_params(cfg, seed=3)
    hf_config, state = to_hf(cfg, params)
    model = transformers.GPTNeoForCausalLM(transformers.GPTNeoConfig(**hf_config)).eval()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=False)
    assert not unexpected and all(k.endswith(("attn.bias", "masked_bias")) for k in missing)
    tokens = np.random.RandomState(0).randint(0, 61, size=(2, 16)).astype(np.int32)
    ours = np.asarray(GPTNeo(cfg).apply({"params": params}, jnp.asarray(tokens)))
    np.testing.assert_allclose(_hf_logits(model, tokens), ours, atol=1e-5, rtol=0)


def test_to_hf_rejects_what_hf_cannot_hold() -> None:
    cfg = ModelConfig(
        n_vocab=61, n_ctx=32, n_embd=32, n_head=4, n_layer=2, attention_types=[[["global"], 2]], rotary_emb=True
    )
    with pytest.raises(ConfigError, match="rotary_emb"):
        to_hf(cfg, init_params(cfg))
