"""GPT-Neo's config names carry the original recipes: `neo config import` of each original config equals its preset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from neo.cli.app import run
from neo.config import CONF_DIR, compose, to_yaml
from neo.config_import import import_config, import_file
from neo.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "gptneo"
# GPT-Neo's name -> the original config it carries (EleutherAI/gpt-neo configs/*.json, transcribed as fixtures)
ORIGINALS = {
    "small": "gpt3_small_256",
    "medium": "gpt3_medium_256",
    "large": "gpt3_large_256",
    "xl": "gpt3_XL_256_Pile",
    "2.7B": "gpt3_2-7B_256",
    "6.7B": "gpt3_6-7B_256",
    "13B": "gpt3_13B_256",
    "PAR_small": "gpt3_PAR_small_256",
    "gpt2_small": "gpt2_small",
}
ALIASES = {f"gpt3_{n}": n for n in ("small", "medium", "large", "xl", "2.7B", "6.7B", "13B", "PAR_small", "175B")}
ALIASES["gpt_1T"] = "1T"


def _flat(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        if isinstance(value, dict):
            keys |= _flat(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


@pytest.mark.parametrize(("name", "original"), ORIGINALS.items())
def test_preset_is_exactly_the_imported_original(name: str, original: str) -> None:
    imported = import_file(str(FIXTURES / f"{original}.json"))
    overrides = [o for o in imported.overrides() if not o.startswith(("mesh.", "optimizer="))]
    preset = compose([f"model={name}"])
    assert to_yaml(compose([f"model={name}", *overrides])) == to_yaml(preset)  # every original value is in the preset
    assert preset.optimizer.name == imported.values["optimizer"]
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"))
    assert isinstance(raw, dict)
    assert _flat(raw) == {k for k in imported.values if "." in k and not k.startswith("mesh.")}  # and nothing else


def test_xl_carries_gpt_neo_s_recipe_and_the_command_line_still_wins() -> None:
    xl = compose(["model=xl"])
    assert (xl.train.batch_size, xl.optimizer.lr, xl.model.n_head, xl.model.precision) == (512, 2e-4, 32, "bfloat16")
    assert (xl.optimizer.warmup_steps, xl.optimizer.lr_decay_end, xl.optimizer.weight_decay) == (3000, 286150, 0.1)
    assert xl.mesh.name == "cpu"  # the mesh stays the mesh= group's
    assert compose(["model=xl", "optimizer.lr=1e-4"]).optimizer.lr == 1e-4
    assert compose(["model=xl", "train.batch_size=64"]).train.batch_size == 64
    other = compose(["model=xl", "optimizer=adafactor"]).optimizer
    assert (other.name, other.lr) == ("adafactor", 2e-4)  # the group choice is the user's, the lr the recipe's


@pytest.mark.parametrize(("alias", "name"), ALIASES.items())
def test_earlier_names_are_the_same_presets(alias: str, name: str) -> None:
    assert compose([f"model={alias}"]) == compose([f"model={name}"])


def test_175b_and_1t_follow_the_gpt3_paper() -> None:
    big = compose(["model=175B"])
    assert (big.model.n_layer, big.model.n_embd, big.model.n_head) == (96, 12288, 96)
    assert (big.optimizer.lr, big.train.batch_size, big.optimizer.weight_decay) == (6e-5, 1536, 0.1)
    # 375M warmup and 260B decay tokens, at 1536 x 2048 tokens a step
    per_step = big.train.batch_size * big.model.n_ctx
    assert big.optimizer.warmup_steps == round(375e6 / per_step)
    assert big.optimizer.lr_decay_end == round(260e9 / per_step) and big.train.steps == round(300e9 / per_step)
    huge = compose(["model=1T"])
    assert (huge.model.n_layer, huge.model.n_embd, huge.model.param_dtype) == (128, 25600, "bfloat16")
    assert (huge.optimizer, huge.train) == (big.optimizer, big.train)


def test_import_maps_by_meaning_and_names_what_it_cannot_map() -> None:
    original = json.loads((FIXTURES / "gpt3_13B_256.json").read_text())
    original = {k: v for k, v in original.items() if k not in ("scale_by_depth", "recompute_grad")}
    imported = import_config({**original, "local_attention_radius": 128, "share_parameters": True})
    values = imported.values
    assert values["model.window_size"] == 128  # GPT-Neo's name for it
    assert values["model.scale_by_depth"] is False and values["model.remat_policy"] == "none"  # GPT-Neo's defaults
    assert values["optimizer.lr_decay_end"] == values["train.steps"] == 143075  # decays until train_steps
    assert values["mesh.layout"] == "batch:x,embd:y,memory_length:y" and values["optimizer"] == "adam"
    assert (values["data.mode"], values["data.stitch"]) == ("documents_random", 25)
    unmapped = {u.key: u.reason for u in imported.unmapped}
    assert "data.dir=" in unmapped["datasets: openwebtext-documents"] and "--run-dir" in unmapped["model_path"]
    assert {"ada_epsilon2", "iterations", "eval_batch_size"} <= set(unmapped)
    assert values["optimizer.adafactor_epsilon1"] == 1e-30
    assert unmapped["share_parameters"] == "no neo equivalent"


def test_cli_import_prints_overrides_that_compose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    written = tmp_path / "xl.yaml"
    assert run(["config", "import", str(FIXTURES / "gpt3_XL_256_Pile.json"), "--write", str(written)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "train.batch_size=512" in lines and "mesh.layout=batch:x,memory_length:y,embd:y" in lines
    assert "'model.attention_types=[[[global],24]]'" in lines  # shell-quoted: `| xargs neo config show` works
    cfg = compose([line.strip("'") for line in lines] + ["mesh=v3-256"])
    assert (cfg.mesh.shape, cfg.model.n_head, cfg.optimizer.lr) == ("x:128,y:2", 32, 2e-4)
    unmapped = [line for line in captured.err.splitlines() if line.strip()]
    assert all(line.startswith("not mapped: ") for line in unmapped) and len(unmapped) == 6
    assert any("datasets: pile" in line and "data.dir=" in line for line in unmapped)
    preset = OmegaConf.load(written)
    assert OmegaConf.to_container(preset.pop("defaults")) == [{"override /optimizer": "adam"}, "_self_"]
    assert preset.model.n_head == 32 and preset.train.batch_size == 512 and preset.mesh.shape == "x:128,y:2"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"n_embd": ', "is not JSON"),
        ("[1, 2]", "a JSON object"),
        (json.dumps({"n_vocab": 50257, "path": "gs://bucket/*.tfrecords"}), "not a GPT-Neo model config"),
        (None, "no GPT-Neo config file"),
    ],
)
def test_cli_import_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, needle: str
) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    assert run(["config", "import", str(path)]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert captured.out == "" and len(lines) == 1 and needle in lines[0] and "Traceback" not in captured.err
    with pytest.raises(ConfigError, match=needle):
        import_file(str(path))


def test_unknown_model_name_lists_gpt_neo_s_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "show", "model=xxl"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "model=" in lines[0] and "xl" in lines[0] and "2.7B" in lines[0]
