"""The optimizer and training-loop configs: every key documented once, here."""

from __future__ import annotations

from dataclasses import dataclass, field

from neo.errors import ConfigError

OPTIMIZERS = ("adam", "adafactor")
DECAYS = ("cosine", "linear")
TRACKERS = ("jsonl", "tensorboard", "wandb")


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam (decoupled weight decay, biases and norm gains excluded) | adafactor
    lr: float = 6e-4  # peak learning rate, reached after warmup_steps
    warmup_steps: int = 0  # linear warmup from 0 to lr
    lr_decay: str = "cosine"  # cosine | linear: decay from lr to end_lr_ratio * lr ...
    lr_decay_end: int = 0  # ... reached at this step (0 = train.steps), then held
    end_lr_ratio: float = 0.1  # GPT-Neo decays to 0.1 * lr
    weight_decay: float = 0.01  # decoupled (AdamW); not applied to biases and norm gains
    beta1: float = 0.9  # Adam's first-moment decay; Adafactor's momentum (0 = none, as optimizer=adafactor sets)
    beta2: float = 0.95  # Adam only (Adafactor's second moments decay as optax's step**-0.8)
    epsilon: float = 1e-8  # Adam only
    adafactor_epsilon1: float = 1e-30  # Adafactor: added to the squared gradients (GPT-Neo's ada_epsilon1); its
    # parameter-scale floor (GPT-Neo's ada_epsilon2) is optax's fixed 1e-3
    gradient_clipping: float = 1.0  # global-norm clipping threshold (0 = off)

    def validate(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optimizer.name '{self.name}' is not one of: {', '.join(OPTIMIZERS)}")
        if self.lr_decay not in DECAYS:
            raise ConfigError(f"optimizer.lr_decay '{self.lr_decay}' is not one of: {', '.join(DECAYS)}")
        if self.lr <= 0:
            raise ConfigError(f"optimizer.lr must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.lr_decay_end < 0:
            raise ConfigError("optimizer.warmup_steps and optimizer.lr_decay_end must be >= 0")
        if not 0 <= self.beta1 < 1:
            raise ConfigError(f"optimizer.beta1 must be in [0, 1), got {self.beta1}")
        if not 0 <= self.end_lr_ratio <= 1:
            raise ConfigError(f"optimizer.end_lr_ratio must be in [0, 1], got {self.end_lr_ratio}")


@dataclass
class TrainConfig:
    run_dir: str = "runs/neo"  # the unit of state: config snapshot, checkpoints, metrics (--run-dir overrides)
    steps: int = 1000  # optimizer updates in the whole run
    batch_size: int = 8  # global batch, in sequences of model.n_ctx tokens
    tokens_per_mb_per_replica: int = 0  # GPT-Neo gradient accumulation: micro-batch tokens per replica (0 = off)
    seed: int = 0  # parameter init, dropout and data order all derive from it
    log_every: int = 10  # steps between metrics.jsonl rows / TensorBoard points
    checkpoint_every: int = 500  # steps between checkpoints (the last step is always saved)
    keep_checkpoints: int = 3  # newest checkpoints kept
    eval_every: int = 0  # steps between evals (0 = at each checkpoint)
    eval_steps: int = 10  # eval batches per evaluation (0 = no eval)
    predict_steps: int = 0  # greedy tokens sampled from predict_prompt at each checkpoint, to samples.jsonl (0 = off)
    predict_prompt: str = "The"
    async_checkpointing: bool = True  # write checkpoints in the background while training continues
    # split the fused vocab projection + loss into this many sequence chunks: bounds the [tokens, vocab] logits'
    # memory for large vocabularies (must divide model.n_ctx). 0 = auto: on CPU chunks of <= 16 MiB of logits
    # (faster there), elsewhere one pass
    loss_chunks: int = 0
    # where logged rows go: jsonl (metrics.jsonl in the run directory), tensorboard (its tensorboard/ folder), wandb
    # (Weights & Biases: `pip install 'neo[wandb]'`; WANDB_MODE=offline keeps the run on disk for `wandb sync`)
    trackers: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard"])
    wandb_project: str = "neo"  # the W&B project; the run's name and id come from the run directory
    # [first, last]: write a jax.profiler trace of these steps (1-based, inclusive) to the run directory's profile/
    # (TensorBoard's profile tab, or Perfetto: perfetto_trace.json.gz); [] = off
    profile_steps: list[int] = field(default_factory=list)

    def validate(self) -> None:
        for key in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"train.{key} must be positive, got {getattr(self, key)}")
        for key in ("tokens_per_mb_per_replica", "eval_every", "eval_steps", "predict_steps", "loss_chunks"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        unknown = [t for t in self.trackers if t not in TRACKERS]
        if unknown:
            raise ConfigError(f"train.trackers: unknown tracker '{unknown[0]}'; choose from: {', '.join(TRACKERS)}")
        steps = list(self.profile_steps)
        if steps and (len(steps) != 2 or not 1 <= steps[0] <= steps[1]):
            raise ConfigError(
                f"train.profile_steps must be [first, last] with 1 <= first <= last (e.g. [10,12]), got {steps}"
            )
