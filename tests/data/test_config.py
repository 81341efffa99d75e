"""The data config composes through Hydra (the `data=default` group) and rejects bad values in one line."""

from __future__ import annotations

import pytest

from neo.config import compose
from neo.errors import ConfigError


def test_default_group_and_overrides() -> None:
    cfg = compose(
        [
            "data.dir=/data/train",
            "data.mode=documents_random",
            "data.stitch=4",
            "data.datasets=[{dir: /data/code, weight: 0.25}]",
            "data.eval_dir=/data/eval",
        ]
    ).data
    assert (cfg.dir, cfg.mode, cfg.stitch, cfg.eval_dir) == ("/data/train", "documents_random", 4, "/data/eval")
    assert [(d.dir, d.weight, d.mode) for d in cfg.train_datasets()] == [
        ("/data/train", 1.0, "documents_random"),
        ("/data/code", 0.25, "documents_random"),
    ]
    assert compose([]).data.dir == ""  # empty by default: train-time check asks for data.dir


def test_bad_values_fail_at_compose_time() -> None:
    with pytest.raises(ConfigError, match=r"data\.mode must be one of"):
        compose(["data.mode=random_chunks"])
    with pytest.raises(ConfigError, match=r"did you mean data\.stitch"):
        compose(["data.stich=2"])
    with pytest.raises(ConfigError, match=r"data\.dir is empty"):
        compose([]).data.require_train()
