"""The data config: which encoded datasets to train and evaluate on, and how to sample them.

The masked-LM options are the model's (`model.mlm_*`, GPT-Neo's keys): the masking stage in `neo.data.pipeline` takes
them from there (`MlmOptions.from_model`), so each is defined once. Preconditions that need the datasets themselves
(e.g. `stitch · shortest record ≥ n_ctx + 1`) are checked by `neo.data.pipeline.check_data` once the trainer knows
n_ctx, before any step runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from neo.errors import ConfigError

SAMPLING_MODES = ("chunks", "documents_fixed", "documents_random")


@dataclass
class DatasetConfig:
    dir: str = ""  # a directory written by `neo data encode`
    weight: float = 1.0  # relative share of samples drawn from this dataset when mixing
    mode: str = ""  # sampling mode for this dataset; "" uses data.mode


@dataclass
class DataConfig:
    dir: str = ""  # a directory written by `neo data encode` (holds dataset.yaml); the first training dataset
    weight: float = 1.0  # sampling weight of `dir` when mixed with `datasets`
    datasets: list[DatasetConfig] = field(default_factory=list)  # more training datasets, mixed by weight
    mode: str = "chunks"  # chunks (n_ctx+1 slices of the token stream, in order), documents_fixed, documents_random
    stitch: int = 1  # documents modes: consecutive documents concatenated per sample
    shuffle_buffer: int = 1000  # documents modes: records shuffled in blocks of this many (memory ∝ it; 1 = none)
    eval_dir: str = ""  # a held-out dataset read in order for evaluation; "" = no evaluation data

    def train_datasets(self) -> list[DatasetConfig]:
        """`dir` (when set) followed by `datasets`, each with its mode resolved."""
        out = [DatasetConfig(self.dir, self.weight, self.mode)] if self.dir else []
        out += [DatasetConfig(d.dir, d.weight, d.mode or self.mode) for d in self.datasets]
        return out

    def validate(self) -> None:
        for key, mode in [("data.mode", self.mode)] + [
            (f"data.datasets[{i}].mode", d.mode) for i, d in enumerate(self.datasets) if d.mode
        ]:
            if mode not in SAMPLING_MODES:
                raise ConfigError(f"{key} must be one of {', '.join(SAMPLING_MODES)}, got {mode!r}")
        if self.weight <= 0 or any(d.weight <= 0 for d in self.datasets):
            raise ConfigError("data.weight and data.datasets[*].weight must be positive")
        if any(not d.dir for d in self.datasets):
            raise ConfigError("every entry of data.datasets needs a dir written by `neo data encode`")
        if self.stitch < 1:
            raise ConfigError(f"data.stitch must be at least 1, got {self.stitch}")
        if self.shuffle_buffer < 1:
            raise ConfigError(f"data.shuffle_buffer must be at least 1 (1 = no shuffling), got {self.shuffle_buffer}")

    def require_train(self) -> None:
        """Called at train time: training without data is a user error, with the fix in the message."""
        if not self.train_datasets():
            raise ConfigError("data.dir is empty; pass data.dir=DIR (a directory written by `neo data encode`)")
