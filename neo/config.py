"""Compose the Hydra config tree under `neo/conf/` into one typed, validated `NeoConfig`.

Each package owns the dataclass of its keys (`neo/model`, `neo/parallel`, `neo/data`) and documents them there; the
run's own keys (optimizer, train loop) are defined here, where `NeoConfig` glues them all together, so the training
package reads the config without the config importing it. The dataclasses are registered with Hydra's ConfigStore
as the schema that the YAML files merge onto, so an unknown key or a value of the wrong type fails during
composition, before any JAX work, and each dataclass's `validate()` then checks values and cross-field rules.

GPT-Neo's model presets (`model=xl`, ...) are `# @package _global_` files that set keys in every section their
original recipe covers (optimizer, train, data; never the mesh): `conf/config.yaml` lists the model group after data
and optimizer so the recipe beats those groups' defaults, and command-line keys beat both.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from neo.data.config import DataConfig
from neo.errors import ConfigError
from neo.model.config import ModelConfig, resolve_precision
from neo.parallel.config import MeshConfig

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


CONF_DIR = Path(__file__).parent / "conf"
GROUPS = ("model", "mesh", "data", "optimizer")


@dataclass
class NeoConfig:
    """Everything a run needs: one typed config per concern."""

    model: ModelConfig = field(default_factory=ModelConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """Check every section, after settling the keys whose `auto` depends on the hardware the run targets."""
        for part in (self.model, self.mesh, self.data, self.optimizer, self.train):
            part.validate()
        self.resolve()

    def resolve(self) -> None:
        """Settle `model.precision=auto` for the mesh preset's platform (`neo.model.config.resolve_precision`), so
        that everything downstream, and the run's config.yaml, sees a concrete dtype."""
        precision = resolve_precision(self.model.precision, self.mesh.platform)
        if precision != self.model.precision:
            self.model = dataclasses.replace(self.model, precision=precision)
        if self.train.batch_size <= 0:
            raise ConfigError(f"train.batch_size must be positive, got {self.train.batch_size}")
        if self.train.loss_chunks and self.model.n_ctx % self.train.loss_chunks:
            raise ConfigError(
                f"train.loss_chunks ({self.train.loss_chunks}) must divide model.n_ctx ({self.model.n_ctx}); "
                "pick a divisor, or 0 (auto)"
            )


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore  # Hydra (0.15 s to import) only where a config is composed

    store = ConfigStore.instance()
    store.store(name="neo_schema", node=NeoConfig)


def group_options(group: str) -> list[str]:
    """The names a group accepts on the command line (`model=<name>`)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _unparseable(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        OverridesParser.create().parse_overrides([override])
    except OverrideParseException:
        return True
    return False


def _one_line(exc: Exception) -> str:
    """Turn a Hydra/OmegaConf exception into one line that names the key and what is allowed."""
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None) or ""
        msg = str(getattr(exc, "msg", None) or exc).splitlines()[0]
        if "not in" in msg.lower() or ("missing" in msg.lower() and "key" in msg.lower()):
            section, _, leaf = key.rpartition(".")
            schema = _section_schema(section)
            if schema is not None:
                names = [f.name for f in dataclasses.fields(schema)]
                close = difflib.get_close_matches(leaf, names, n=1)
                where = f"{section}." if section else ""
                hint = f" (did you mean {where}{close[0]}?)" if close else ""
                scope = f"keys in {section}" if section else "top-level keys"
                return f"unknown config key '{key}'{hint}; valid {scope}: {', '.join(names)}"
        return f"bad value for config key '{key}': {msg}" if key else msg
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    for group in GROUPS:
        if f"'{group}/" in text and "Could not find" in text:
            found = re.search(rf"'{re.escape(group)}/([^']+)'", text)
            name = found.group(1) if found else "?"
            close = difflib.get_close_matches(name, group_options(group), n=1, cutoff=0.5)
            hint = f" (did you mean {group}={close[0]}?)" if close else ""
            return f"unknown {group}={name}{hint}; available {group}= options: {', '.join(group_options(group))}"
    return text


def _section_schema(section: str) -> type | None:
    cls: Any = NeoConfig
    for part in filter(None, section.split(".")):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            return None
        cls = fields[part].type if not isinstance(fields[part].type, str) else _resolve(cls, part)
    return cls if dataclasses.is_dataclass(cls) else None


def _resolve(cls: type, name: str) -> Any:
    import typing

    return typing.get_type_hints(cls)[name]


# Keys whose GPT-Neo values contain commas ("x:16,y:8", "batch:x,heads:y"), which Hydra's override grammar would
# read as a list; we quote them so users can type them as GPT-Neo wrote them.
_COMMA_STRING_KEYS = ("mesh.shape", "mesh.layout")


def _quote_comma_strings(override: str) -> str:
    key, sep, value = override.partition("=")
    if sep and key.lstrip("+~") in _COMMA_STRING_KEYS and "," in value and value[:1] not in "'\"":
        return f"{key}='{value}'"
    return override


def compose_dict(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose the raw Hydra config (still an OmegaConf tree) from `neo/conf` and command-line overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, OverrideParseException

    overrides = [_quote_comma_strings(o) for o in overrides or []]
    _register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return hydra_compose(config_name=config_name, overrides=list(overrides or []))
    except OverrideParseException:
        bad = next((o for o in overrides if _unparseable(o)), "?")
        raise ConfigError(
            f"cannot read the override {bad!r}: write key=value (e.g. model.n_layer=24) or group=option "
            "(e.g. model=xl); quote values that contain spaces or brackets"
        ) from None
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
        raise ConfigError(_one_line(cause)) from None
    finally:
        GlobalHydra.instance().clear()


def to_config(cfg: DictConfig) -> NeoConfig:
    """Convert a composed tree to typed dataclasses and validate every section."""
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(_one_line(exc)) from None
    if not isinstance(obj, NeoConfig):
        raise ConfigError("the composed config does not follow the neo schema; start from neo/conf/config.yaml")
    obj.validate()
    return obj


def compose(overrides: list[str] | None = None) -> NeoConfig:
    """Compose and validate: a typo fails here, in the first second, with the key's name."""
    return to_config(compose_dict(overrides))


# Keys older snapshots carry that no longer exist: they described how, not what (now `model.attention_impl` and
# the decoding layout), so dropping them keeps the run's meaning.
RETIRED_KEYS = {"model": ("weights_out_first", "cpu_matmuls")}


def load(path: str | Path, overrides: list[str] | None = None) -> NeoConfig:
    """Load a config snapshot (a run directory's `config.yaml`) back into typed form, with `key=value` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at {path}; pass a run directory written by `neo train`")
    try:
        snapshot = OmegaConf.load(path)
        for section, keys in RETIRED_KEYS.items():  # snapshots of runs written before these keys left the schema
            node = snapshot.get(section) if isinstance(snapshot, DictConfig) else None
            for key in keys if isinstance(node, DictConfig) else ():
                node.pop(key, None)
        merged = OmegaConf.merge(
            OmegaConf.structured(NeoConfig), snapshot, OmegaConf.from_dotlist(list(overrides or []))
        )
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {_one_line(exc)}") from None
    return to_config(merged)  # type: ignore[arg-type]


def to_yaml(config: NeoConfig) -> str:
    """The config as YAML, for snapshots and `neo config show`."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
