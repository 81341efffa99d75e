"""Compose the Hydra config tree under `neo/conf/` into one typed, validated `NeoConfig`.

Each concern owns its dataclass (model, mesh, data, optimizer, train) and documents its keys there; this module only
glues them together. The dataclasses are registered with Hydra's ConfigStore as the schema that the YAML files merge
onto, so an unknown key or a value of the wrong type fails during composition, before any JAX work, and each
dataclass's `validate()` then checks values and cross-field rules.

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

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from neo.data.config import DataConfig
from neo.errors import ConfigError
from neo.model.config import ModelConfig, resolve_precision
from neo.parallel.config import MeshConfig
from neo.train.config import OptimizerConfig, TrainConfig

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
    store = ConfigStore.instance()
    store.store(name="neo_schema", node=NeoConfig)


def group_options(group: str) -> list[str]:
    """The names a group accepts on the command line (`model=<name>`)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _unparseable(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

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
    _register_schema()
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
