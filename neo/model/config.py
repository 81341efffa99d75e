"""The model config: every GPT-Neo architecture key, documented once, here.

Key names follow GPT-Neo's JSON configs where one existed, so an original config maps over key by key. `validate()`
rejects every invalid combination with one line naming the key, before any JAX work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from neo.errors import ConfigError

ATTENTION_TYPES = ("global", "local", "linear", "none")
ACTIVATIONS = (
    "gelu",  # tanh approximation, GPT-Neo's and HF's gelu_new
    "gelu_exact",
    "relu",
    "relu6",
    "selu",
    "elu",
    "celu",
    "silu",
    "swish",
    "mish",
    "softplus",
    "sigmoid",
    "tanh",
    "leaky_relu",
    "log_sigmoid",
    "soft_sign",
    "hard_tanh",
    "hard_sigmoid",
    "hard_silu",
    "lisht",
    "abs",
    "sin",
    "cos",
)
DTYPES = ("float32", "bfloat16")
PRECISIONS = ("auto", *DTYPES)  # model.precision; `auto` is settled by `resolve_precision`
ACCELERATORS = ("tpu", "gpu")  # platforms whose matrix units run bfloat16 at full rate
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ATTENTION_IMPLS = ("auto", "xla", "splash", "cudnn", "cpu")  # see neo.model.kernels


@dataclass
class MoEParams:
    num_experts: int = 8  # experts per MoE layer (own logical axis `experts`)
    capacity_factor: float = 1.25  # expert capacity = ceil(capacity_factor * 2 * tokens_per_row / num_experts)
    aux_loss_coef: float = 0.01  # weight of the load-balancing loss sown into the "losses" collection
    hidden_size: int = 0  # expert MLP width; 0 = the dense MLP width
    dropout_rate: float = 0.0  # dropout inside the experts (GPT-Neo's moe_dropout_rate)


@dataclass
class ModelConfig:
    n_vocab: int = 50257  # vocabulary size (rows of wte)
    n_ctx: int = 2048  # context length (rows of wpe)
    n_embd: int = 768  # model width
    n_head: int = 12  # attention heads; n_embd must divide evenly
    n_layer: int = 12  # transformer blocks
    # GPT-Neo syntax: [[["global", "local"], 6]] repeats the pattern 6 times -> 12 layers. A flat list of type
    # names is accepted too. Types: global | local | linear (causal by cumulative sums) | none (no attention).
    attention_types: list[Any] = field(default_factory=lambda: [[["global"], 12]])
    window_size: int = 256  # local attention: a query sees itself and the window_size - 1 keys before it
    activation_function: str = "gelu"  # MLP activation; gelu = tanh approximation (HF gelu_new), see ACTIVATIONS
    mlp_dim: int = 0  # MLP hidden width; 0 = 4 * n_embd
    layer_norm_epsilon: float = 1e-5  # LayerNorm / ScaleNorm epsilon
    embed_dropout: float = 0.0  # dropout on token + position embeddings
    attn_dropout: float = 0.0  # dropout on attention probabilities
    res_dropout: float = 0.0  # dropout on each sub-layer's output before the residual add
    scale_by_depth: bool = True  # residual-output projections (attn out, mlp c_proj) init std / sqrt(n_layer)
    scale_by_in: bool = False  # dense init std / sqrt(fan_in)
    # activation (compute) dtype: auto | float32 | bfloat16. auto = bfloat16 when the mesh preset's platform
    # (mesh.platform) is tpu or gpu, float32 on cpu; settled when the config is composed or loaded, so a run's
    # config.yaml records the dtype it trained with. Parameters and optimizer state stay in param_dtype; the loss,
    # logsumexp, norms' statistics and attention scores and softmax always run in float32.
    precision: str = "auto"
    # parameter storage dtype, and so the Adam/Adafactor state's: float32 | bfloat16. float32 (the default) keeps
    # float32 master weights under bfloat16 compute: each use casts them to the activation dtype.
    param_dtype: str = "float32"
    no_weight_tie: bool = False  # untied output head (lm_head); ln_f is applied either way
    num_mem_kv: int = 0  # learned memory key/value slots every query attends to
    axial_pos_emb: list[int] | None = None  # e.g. [32, 64] (product = n_ctx): factorised position embedding
    rotary_emb: bool = False  # rotary position embedding on q and k instead of a learned wpe
    mlp_glu: bool = False  # gated MLP: act(x W_gate) * (x W_fc)
    scalenorm: bool = False  # ScaleNorm (normalise, one scalar gain) instead of LayerNorm in the blocks
    rezero: bool = False  # ReZero: pre-norms replaced by one zero-initialised scalar gain
    macaron: bool = False  # macaron blocks: half-step MLP, attention, half-step MLP
    moe_layers: list[int] = field(default_factory=list)  # layer indices whose MLP is a Mixture-of-Experts
    moe_params: MoEParams = field(default_factory=MoEParams)
    mlm_training: bool = False  # masked-LM objective: bidirectional attention, loss on masked positions only
    mlm_mask_id: int = -1  # token written at masked positions (required with mlm_training)
    mlm_cls_token_id: int = -1  # when >= 0, prepended to each sequence (the last token is dropped)
    mlm_mask_prob: float = 0.15  # fraction of positions selected for prediction
    mlm_same_token_prob: float = 0.10  # of those, fraction left unchanged
    mlm_random_token_prob: float = 0.10  # of those, fraction replaced by a random token
    mlm_mask_ignore_ids: list[int] = field(default_factory=list)  # token ids never selected (e.g. eos, pad)
    z_loss: float = 0.0  # coefficient of mean(logsumexp(logits)^2), sown into the "losses" collection
    scan_layers: bool = True  # run the repeating layer pattern under nn.scan (params get a leading `layers` axis)
    # none | full (save nothing) | dots (save matmul outputs, recompute the elementwise ops: less memory than none,
    # and on CPU 12% faster, as it writes fewer activations) | dots_no_batch
    remat_policy: str = "dots"
    # attention (and matmul) kernels, neo.model.kernels: auto | xla | splash | cudnn | cpu. auto = cpu kernels on
    # CPUs, splash flash attention on TPUs, cuDNN flash attention on NVIDIA GPUs (bfloat16 models; else xla).
    # A choice the devices cannot run (e.g. cudnn on CPUs) is a one-line error.
    attention_impl: str = "auto"
    # not a key: dense weights stored [out, in] instead of [in, out], true only of `DecodingConfig`
    weights_out_first: ClassVar[bool] = False

    # ---- derived --------------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def inner_dim(self) -> int:
        return self.mlp_dim or 4 * self.n_embd

    @property
    def causal(self) -> bool:
        return not self.mlm_training

    def layer_types(self) -> list[str]:
        """`attention_types` expanded to exactly n_layer entries (GPT-Neo's nested pattern syntax)."""
        out: list[str] = []
        for item in self.attention_types:
            if isinstance(item, str):
                out.append(item)
                continue
            if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[1], int):
                raise ConfigError(
                    f"model.attention_types entry {item!r} is malformed; use [[types...], repeats], "
                    'e.g. [[["global", "local"], 6]]'
                )
            pattern, repeats = item
            pattern = [pattern] if isinstance(pattern, str) else list(pattern)
            out.extend(list(pattern) * repeats)
        return out

    def layer_kinds(self) -> list[tuple[str, bool]]:
        """(attention type, is MoE) per layer: what makes two layers structurally different."""
        moe = set(self.moe_layers)
        return [(t, i in moe) for i, t in enumerate(self.layer_types())]

    def scan_period(self) -> int:
        """The shortest repeating block of layers; the scan runs n_layer / period times over it."""
        kinds = self.layer_kinds()
        n = len(kinds)
        for p in range(1, n + 1):
            if n % p == 0 and all(kinds[i] == kinds[i % p] for i in range(n)):
                return p
        return n

    # ---- validation -----------------------------------------------------------------------------------------
    def validate(self) -> None:
        for key in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "window_size"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
            if getattr(self, key) >= 2**31:  # token ids, positions and shapes are int32 on the devices
                raise ConfigError(f"model.{key} must be below 2**31 (int32), got {getattr(self, key)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        types = self.layer_types()
        if len(types) != self.n_layer:
            raise ConfigError(
                f"model.attention_types expands to {len(types)} layers but model.n_layer is {self.n_layer}; "
                "make the repeats add up"
            )
        bad = sorted(set(types) - set(ATTENTION_TYPES))
        if bad:
            raise ConfigError(f"model.attention_types has {bad}; allowed: {', '.join(ATTENTION_TYPES)}")
        if self.activation_function not in ACTIVATIONS:
            raise ConfigError(
                f"model.activation_function '{self.activation_function}' is not one of: {', '.join(ACTIVATIONS)}"
            )
        for key, allowed in (("precision", PRECISIONS), ("param_dtype", DTYPES)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"model.{key} '{getattr(self, key)}' is not one of: {', '.join(allowed)}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(
                f"model.attention_impl '{self.attention_impl}' is not one of: {', '.join(ATTENTION_IMPLS)}"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ConfigError(f"model.remat_policy '{self.remat_policy}' is not one of: {', '.join(REMAT_POLICIES)}")
        for key in ("embed_dropout", "attn_dropout", "res_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key} must be in [0, 1), got {getattr(self, key)}")
        if self.mlp_dim < 0 or self.num_mem_kv < 0 or self.z_loss < 0:
            raise ConfigError("model.mlp_dim, model.num_mem_kv and model.z_loss must be >= 0")
        if self.axial_pos_emb is not None:
            if len(self.axial_pos_emb) != 2 or math.prod(self.axial_pos_emb) != self.n_ctx:
                raise ConfigError(
                    f"model.axial_pos_emb {list(self.axial_pos_emb)} must be two sizes multiplying to "
                    f"model.n_ctx ({self.n_ctx})"
                )
            if self.rotary_emb:
                raise ConfigError("model.axial_pos_emb and model.rotary_emb are exclusive; pick one position scheme")
        if self.rotary_emb and self.head_dim % 2:
            raise ConfigError(f"model.rotary_emb needs an even head size, got n_embd/n_head = {self.head_dim}")
        if self.num_mem_kv and "linear" in types:
            raise ConfigError("model.num_mem_kv with linear attention is not implemented yet; use global/local layers")
        if self.scalenorm and self.rezero:
            raise ConfigError("model.scalenorm and model.rezero are exclusive; pick one normalisation")
        if any(not 0 <= i < self.n_layer for i in self.moe_layers):
            raise ConfigError(f"model.moe_layers {list(self.moe_layers)} must be layer indices in [0, {self.n_layer})")
        if self.moe_layers:
            m = self.moe_params
            if m.num_experts < 2:
                raise ConfigError(f"model.moe_params.num_experts must be >= 2 for top-2 gating, got {m.num_experts}")
            if m.capacity_factor <= 0 or m.hidden_size < 0 or not 0 <= m.dropout_rate < 1:
                raise ConfigError("model.moe_params: capacity_factor > 0, hidden_size >= 0, dropout_rate in [0, 1)")
        if self.mlm_training:
            if not 0 <= self.mlm_mask_id < self.n_vocab:
                raise ConfigError("model.mlm_training needs model.mlm_mask_id set to a token id in [0, n_vocab)")
            if self.mlm_cls_token_id >= self.n_vocab:
                raise ConfigError(f"model.mlm_cls_token_id must be < n_vocab ({self.n_vocab})")
            probs = (self.mlm_mask_prob, self.mlm_same_token_prob, self.mlm_random_token_prob)
            if not 0 < self.mlm_mask_prob <= 1 or min(probs) < 0 or sum(probs[1:]) > 1:
                raise ConfigError(
                    "model.mlm_mask_prob must be in (0, 1] and mlm_same_token_prob + mlm_random_token_prob <= 1"
                )


def resolve_precision(precision: str, platform: str) -> str:
    """The activation dtype `model.precision` names on `platform` (cpu | gpu | tpu): `auto` is bfloat16 on
    accelerators and float32 on CPUs; an explicit dtype is kept as is."""
    if precision != "auto":
        return precision
    return "bfloat16" if platform in ACCELERATORS else "float32"


class DecodingConfig(ModelConfig):
    """The same model laid out for decoding (made by `neo.model.decode.for_decoding` only): layers unrolled and
    dense weights stored [out, in], for its few-row products. Checkpoints, converters and training use [in, out]."""

    weights_out_first: ClassVar[bool] = True
