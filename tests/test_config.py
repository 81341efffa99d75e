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


@pytest.mark.parametrize(
    ("overrides", "precision"),
    [
        ([], "float32"),  # mesh=cpu
        (["mesh=cpu-8"], "float32"),
        (["mesh=v3-8"], "bfloat16"),
        (["mesh=v5e-256"], "bfloat16"),
        (["mesh=gpu-1"], "bfloat16"),
        (["mesh=gpu-8"], "bfloat16"),
        (["mesh=v3-8", "model.precision=float32"], "float32"),  # an explicit value always wins
        (["mesh=cpu-8", "model.precision=bfloat16"], "bfloat16"),
        (["mesh=cpu", "model.precision=auto"], "float32"),
        (["model=xl"], "bfloat16"),  # GPT-Neo's recipe says bfloat16 itself
    ],
)
def test_precision_auto_follows_the_mesh_presets_platform(overrides: list[str], precision: str) -> None:
    cfg = compose(overrides)
    assert cfg.model.precision == precision and cfg.model.param_dtype == "float32"  # float32 master weights


def test_a_snapshot_records_the_resolved_precision(tmp_path) -> None:
    """A run's config.yaml holds the dtype the run trained with: sampling or converting it on a CPU later reads
    bfloat16 activations (over float32 parameters), not a re-resolved `auto`."""
    import jax

    from neo.model.params import abstract_variables
    from neo.train.loop import prepare_run_dir

    prepare_run_dir(compose(["mesh=v3-8"]), str(tmp_path))
    assert "precision: bfloat16" in (tmp_path / "config.yaml").read_text()
    loaded = load(tmp_path / "config.yaml")
    assert loaded.model.precision == "bfloat16"
    params = abstract_variables(loaded.model)["params"]
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jax.numpy.dtype("float32")}
    # a hand-written snapshot saying `auto` is settled by its own mesh, like a composed config
    text = to_yaml(compose(["mesh=gpu-1"])).replace("precision: bfloat16", "precision: auto")
    (tmp_path / "config.yaml").write_text(text)
    assert load(tmp_path / "config.yaml").model.precision == "bfloat16"
    # a config made in code (`neo convert from-hf` writes one) is settled when it is validated
    made = NeoConfig()
    assert made.model.precision == "auto"
    made.validate()
    assert made.model.precision == "float32"
