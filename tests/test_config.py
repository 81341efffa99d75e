"""Composition of neo/conf into typed configs, and one-line errors for every kind of mistake."""

from __future__ import annotations

import time

import pytest

from neo.config import NeoConfig, compose, group_options, load, to_yaml
from neo.errors import ConfigError


def test_default_composes_into_typed_sections() -> None:
    cfg = compose([])
    assert isinstance(cfg, NeoConfig)
    assert cfg.model.n_layer == len(cfg.model.layer_types())
    assert cfg.optimizer.name == "adam"


def test_overrides_apply_and_are_typed() -> None:
    cfg = compose(["model=neo_125M", "train.steps=50", "optimizer=adafactor", "optimizer.lr=0.01"])
    assert cfg.model.n_embd == 768
    assert cfg.train.steps == 50
    assert cfg.optimizer.name == "adafactor"
    assert cfg.optimizer.lr == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.stepz=5"], "did you mean train.steps"),
        (["model.n_layr=5"], "model.n_layer"),
        (["modle.n_layer=5"], "did you mean model?); valid top-level keys: model, mesh"),
        (["train.steps=abc"], "train.steps"),
        (["model=nope"], "unknown model=nope; available model= options: "),
        (["model=xll"], "unknown model=xll (did you mean model=xl?)"),
        (["mesh=v3-265"], "(did you mean mesh=v3-256?)"),
        (["train.steps=5", "[/]"], "cannot read the override '[/]': write key=value"),
        (["optimizer.name=sgd"], "adam, adafactor"),
        (["model.n_embd=100", "model.n_head=3"], "divisible"),
        (["model.activation_function=gelux"], "gelu"),
        (["train.loss_chunks=3"], "must divide model.n_ctx"),
        (["train.loss_chunks=-1"], "train.loss_chunks must be >= 0"),
    ],
)
def test_mistakes_fail_fast_with_one_line(overrides: list[str], expected: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        compose(overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert time.perf_counter() - start < 5.0


def test_every_model_preset_validates() -> None:
    names = group_options("model")
    assert {"tiny", "neo_125M", "neo_1.3B", "neo_2.7B", "gpt3_xl", "gpt3_175B"} <= set(names)
    for name in names:
        compose([f"model={name}"])


def test_snapshot_round_trip(tmp_path) -> None:
    cfg = compose(["model=gpt3_small", "train.steps=7", "train.seed=3"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert load(path) == cfg


def test_snapshots_of_older_runs_still_load(tmp_path) -> None:
    """Runs written before `model.attention_impl` carried the two layout flags it replaced."""
    cfg = compose(["model=tiny"])
    old = to_yaml(cfg).replace("model:\n", "model:\n  weights_out_first: false\n  cpu_matmuls: true\n", 1)
    (tmp_path / "config.yaml").write_text(old)
    assert load(tmp_path / "config.yaml") == cfg
    (tmp_path / "config.yaml").write_text(old.replace("cpu_matmuls", "cpu_matmulz"))
    with pytest.raises(ConfigError, match="cpu_matmulz"):  # a key that never existed is still an error
        load(tmp_path / "config.yaml")


def test_load_missing_snapshot_is_a_user_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no config file"):
        load(tmp_path / "config.yaml")
