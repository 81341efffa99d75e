"""Sharded sampling on 8 simulated CPU devices.

Under model-, data- and vocab-parallel meshes greedy decoding gives exactly the single-device tokens; `neo sample
--mesh` runs a run directory sharded and refuses a mesh that does not fit in one line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from neo.cli.app import run
from neo.errors import LayoutError
from neo.model.config import ModelConfig
from neo.model.decode import generate, param_shardings, placed_cache
from neo.parallel.config import MeshConfig
from neo.parallel.mesh import mesh_and_rules
from tests.model.conftest import params_for
from tests.model.conftest import small as _small

PROMPTS = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18]]


def small(**changes: object) -> ModelConfig:
    """The shared small model with a vocabulary that a 2- or 4-way vocab split divides."""
    return _small(n_vocab=64, **changes)


XL_LAYOUT = "batch:x,memory_length:y,embd:y"  # GPT-Neo's XL layout: the keys' length split like the width
LAYOUTS = {  # mesh shape, layout
    "model-parallel": ("x:2,y:4", "batch:x,heads:y,mlp:y"),
    "data-parallel": ("x:8", "batch:x"),  # 3 prompts: padded with dummy rows to 8
    "vocab-parallel": ("x:4,y:2", "heads:x,vocab:y"),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_sharded_greedy_equals_single_device(name: str) -> None:
    cfg = small()
    params = params_for(cfg)
    expected = generate(cfg, params, PROMPTS, max_new_tokens=8, temperature=0)
    mesh, rules = mesh_and_rules(MeshConfig(shape=LAYOUTS[name][0], layout=LAYOUTS[name][1]))
    assert generate(cfg, params, PROMPTS, max_new_tokens=8, temperature=0, mesh=mesh, rules=rules) == expected


def test_gpt_neo_xl_layout_shards_the_cache_slots() -> None:
    mesh, rules = mesh_and_rules(MeshConfig(shape="x:2,y:4", layout=XL_LAYOUT))
    cache = placed_cache(replace(small(window_size=4), scan_layers=False), 4, 16, mesh, rules)
    assert tuple(cache[0]["k"].sharding.spec) == ("x", None, "y", None)  # [batch, heads, slots, kv]
    assert cache[1]["k"].addressable_shards[0].data.shape == (2, 4, 1, 8)  # the local ring: 4 slots over y=4
    assert tuple(cache[1]["pos"].sharding.spec) == ("x", "y")
    with pytest.raises(LayoutError, match="'memory_length' of size 3 is not divisible"):  # a 3-slot window
        placed_cache(replace(small(), scan_layers=False), 4, 16, mesh, rules)


@pytest.mark.slow  # ~25 s on 2 busy cores
def test_gpt_neo_xl_layout_decodes_like_one_device() -> None:
    cfg = small(window_size=4)
    params = params_for(cfg)
    expected = generate(cfg, params, PROMPTS, max_new_tokens=8, temperature=0)
    mesh, rules = mesh_and_rules(MeshConfig(shape="x:2,y:4", layout=XL_LAYOUT))
    assert generate(cfg, params, PROMPTS, max_new_tokens=8, temperature=0, mesh=mesh, rules=rules) == expected


def test_a_layout_that_does_not_divide_a_tensor_is_refused() -> None:
    mesh, rules = mesh_and_rules(MeshConfig(shape="x:4,y:2", layout="vocab:y"))
    with pytest.raises(LayoutError, match="vocab"):
        generate(_small(), params_for(_small()), PROMPTS, max_new_tokens=2, mesh=mesh, rules=rules)  # vocab 53


def test_parameters_and_cache_are_placed_by_the_layout() -> None:
    mesh, rules = mesh_and_rules(MeshConfig(shape="x:2,y:4", layout="batch:x,heads:y,mlp:y"))
    cfg = replace(small(), scan_layers=False)
    shardings = param_shardings(cfg, mesh, rules)
    assert tuple(shardings["h_0"]["attn"]["q"].spec) == (None, "y", None)  # [embd, heads, kv]
    assert tuple(shardings["h_0"]["mlp"]["c_fc"].spec) == (None, "y")  # [embd, mlp]
    cache = placed_cache(cfg, 4, 16, mesh, rules)
    assert tuple(cache[0]["k"].sharding.spec) == ("x", "y", None, None)  # [batch, heads, slots, kv]
    assert cache[0]["k"].addressable_shards[0].data.shape == (2, 1, 16, 8)
    assert tuple(cache[1]["pos"].sharding.spec) == ("x", None)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory (params-only checkpoint) of the small test model, with a letter-level tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from neo.convert import write_run

    cfg = small()
    path = write_run(tmp_path_factory.mktemp("sample") / "run", cfg, params_for(cfg), Path("."), None)
    vocab = {chr(ord("a") + i): i for i in range(26)} | {"<|endoftext|>": 52}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    tok.save(str(path / "tokenizer.json"))
    return path


def test_neo_sample_with_a_mesh_prints_the_single_device_text(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    greedy = ["sample", str(run_dir), "--prompt", "hello", "--temperature", "0", "--max-new-tokens", "6"]
    capsys.readouterr()
    assert run(greedy) == 0
    single = capsys.readouterr().out
    assert run([*greedy, "--mesh", "x:2,y:4", "--layout", "heads:y,mlp:y"]) == 0
    assert capsys.readouterr().out == single and len(single) > len("hello")
    assert run([*greedy, "--mesh", "run"]) == 0  # the run's own mesh: every device, batch over all of them
    assert capsys.readouterr().out == single


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mesh", "x:3"], "needs 3 devices but 8 are present"),
        (["--mesh", "x:2,y:4", "--layout", "heads:x,embd:x"], "mesh axis 'x' is used twice"),
        (["--mesh", "x:8", "--layout", "heads:x"], "'heads' of size 4 is not divisible"),
        (["--layout", "heads:y"], "--layout needs --mesh"),
        (["--weights", "int4"], "--weights 'int4' is not one of: float32, bfloat16, int8"),
        (["--weights", "int8", "--mesh", "x:8"], "--weights int8 decodes on one device for now"),
    ],
)
def test_neo_sample_refuses_a_mesh_that_does_not_fit_in_one_line(
    run_dir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    capsys.readouterr()
    assert run(["sample", str(run_dir), "--prompt", "hi", "--max-new-tokens", "2", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_neo_sample_with_int8_weights_prints_a_continuation(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    args = ["sample", str(run_dir), "--prompt", "hello", "--temperature", "0", "--max-new-tokens", "6"]
    assert run([*args, "--weights", "int8"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("hello") and len(text) > len("hello")
