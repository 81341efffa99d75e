"""neo.model: GPT-Neo in Flax, read top to bottom like a paper.

config (ModelConfig) -> common (params with logical axes) -> positions, norms, attention, mlp, moe -> transformer
(GPTNeo) -> objectives (weighted cross-entropy) -> decode (KV cache, generate) -> params (counts, per-layer views) ->
hf / mtf (checkpoint conversion).
"""
