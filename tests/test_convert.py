"""Run directories <-> Hugging Face GPT-Neo directories, through the CLI, checked against transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neo.cli.app import run

pytestmark = pytest.mark.hf


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.manual_seed(0)
    config = GPTNeoConfig(
        vocab_size=96,
        max_position_embeddings=32,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global", "local"], 1]],
        window_size=6,
    )
    model = GPTNeoForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("hf")
    model.save_pretrained(path, safe_serialization=True)
    return path


def test_from_hf_gives_transformers_logits_and_to_hf_is_the_identity(hf_dir: Path, tmp_path: Path) -> None:
    import jax.numpy as jnp
    import torch
    from safetensors.numpy import load_file
    from transformers import GPTNeoForCausalLM

    from neo.model.transformer import GPTNeo
    from neo.train.checkpoint import load_run

    run_dir, back = tmp_path / "run", tmp_path / "back"
    assert run(["convert", "from-hf", str(hf_dir), str(run_dir)]) == 0
    cfg, params, step = load_run(run_dir)
    assert step == 0
    tokens = np.random.default_rng(0).integers(0, 96, size=(2, 32))
    ours = np.asarray(GPTNeo(cfg.model).apply({"params": params}, jnp.asarray(tokens, jnp.int32)))
    with torch.no_grad():
        theirs = GPTNeoForCausalLM.from_pretrained(hf_dir).eval()(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)

    assert run(["convert", "to-hf", str(run_dir), str(back)]) == 0
    original, exported = load_file(str(hf_dir / "model.safetensors")), load_file(str(back / "model.safetensors"))
    for name, tensor in original.items():
        if name.endswith(("attn.attention.bias", "attn.attention.masked_bias")):
            continue
        np.testing.assert_array_equal(exported[name], tensor, err_msg=name)
    reloaded = GPTNeoForCausalLM.from_pretrained(back).eval()
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(torch.tensor(tokens)).logits.numpy(), theirs, atol=1e-6)


def test_converted_run_is_refused_when_weights_are_not_safetensors(tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "gpt_neo"}')
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"\0")
    assert run(["convert", "from-hf", str(tmp_path / "hf"), str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def _truncate_weights(d: Path) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_truncate_weights, "is not a readable safetensors file"),
        (lambda d: (d / "model.safetensors").write_bytes(b"junk" * 100), "is not a readable safetensors file"),
        (lambda d: (d / "config.json").write_text('{"model_type": "gpt_neo",'), "is not valid JSON"),
        (lambda d: (d / "config.json").write_text('{"model_type": "gpt_neo"}'), "it is not a GPT-Neo config.json"),
        (lambda d: (d / "config.json").write_text('{"model_type": "llama"}'), "neo converts GPT-Neo models only"),
    ],
    ids=["truncated-weights", "junk-weights", "config-not-json", "config-not-gpt-neo", "other-model"],
)
def test_damaged_hf_directories_are_one_line_and_write_nothing(
    hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage, expected: str
) -> None:
    import shutil

    broken = tmp_path / "hf"
    shutil.copytree(hf_dir, broken)
    damage(broken)
    assert run(["convert", "from-hf", str(broken), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_neo_sample_on_a_converted_model_matches_transformers_greedy(
    hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPTNeoForCausalLM

    vocab = {chr(ord("a") + i): i for i in range(26)} | {"<|endoftext|>": 95}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    run_dir = tmp_path / "run"
    assert run(["convert", "from-hf", str(hf_dir), str(run_dir)]) == 0
    tok.save(str(run_dir / "tokenizer.json"))
    capsys.readouterr()
    assert run(["sample", str(run_dir), "--prompt", "hello", "--temperature", "0", "--max-new-tokens", "12"]) == 0
    text = capsys.readouterr().out
    ids = tok.encode("hello").ids
    with torch.no_grad():
        expected = (
            GPTNeoForCausalLM.from_pretrained(hf_dir)
            .generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=95, pad_token_id=95)[
                0, len(ids) :
            ]
            .tolist()
        )
    if 95 in expected:
        expected = expected[: expected.index(95)]
    assert len(expected) >= 3  # a continuation long enough to compare
    assert text == "hello" + tok.decode(expected)


def test_from_mtf_cli_writes_a_run_directory(tmp_path: Path) -> None:
    import json

    from neo.model.mtf import from_mtf
    from neo.train.checkpoint import load_run
    from tests.model.test_mtf import ORIGINAL, _write_checkpoint

    _write_checkpoint(tmp_path / "model.ckpt-1000")
    (tmp_path / "config.json").write_text(json.dumps(ORIGINAL))
    run_dir = tmp_path / "run"
    assert (
        run(["convert", "from-mtf", str(tmp_path / "model.ckpt-1000"), str(tmp_path / "config.json"), str(run_dir)])
        == 0
    )
    cfg, params, _ = load_run(run_dir)
    _, expected = from_mtf(str(tmp_path / "model.ckpt-1000"), ORIGINAL)
    assert cfg.model.window_size == 3
    np.testing.assert_array_equal(np.asarray(params["wte"]), expected["wte"])
    assert (
        run(["convert", "from-mtf", str(tmp_path / "nothing"), str(tmp_path / "config.json"), str(tmp_path / "r2")])
        == 2
    )


def test_to_hf_of_a_trained_run_loads_with_the_auto_classes_and_its_own_special_ids(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides
) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from neo.config import compose
    from neo.train.loop import train

    run_dir, out = tmp_path / "run", tmp_path / "hf"
    train(compose(tiny_overrides(tiny_dataset, run_dir, "train.steps=1", "train.eval_steps=0")), run_dir)
    assert run(["convert", "to-hf", str(run_dir), str(out)]) == 0
    ours = Tokenizer.from_file(str(tiny_dataset["tokenizer"]))
    eos = ours.token_to_id("<|endoftext|>")
    assert eos != 50256  # GPT-2's id, which transformers would assume without these files
    tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    assert tokenizer.eos_token_id == model.config.eos_token_id == model.generation_config.eos_token_id == eos
    assert model.generation_config.pad_token_id is not None
    assert tokenizer("the model").input_ids == ours.encode("the model").ids


def test_fine_tuning_a_converted_run_needs_no_model_overrides(
    tiny_dataset: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    from neo.train.checkpoint import load_run

    torch.manual_seed(0)
    shape = dict(vocab_size=320, max_position_embeddings=64, hidden_size=32, num_layers=2, num_heads=4)
    GPTNeoForCausalLM(GPTNeoConfig(**shape, attention_types=[[["global", "local"], 1]], window_size=8)).save_pretrained(
        tmp_path / "hf", safe_serialization=True
    )
    run_dir = tmp_path / "run"
    assert run(["convert", "from-hf", str(tmp_path / "hf"), str(run_dir)]) == 0
    _, before, _ = load_run(run_dir)
    args = [f"data.dir={tiny_dataset['train']}", "train.steps=2", "train.batch_size=8", "train.eval_steps=0"]
    assert run(["train", "--run-dir", str(run_dir), *args, "train.async_checkpointing=false"]) == 0
    assert "the run's own" in capsys.readouterr().err
    cfg, after, step = load_run(run_dir)
    assert step == 2 and cfg.model.n_embd == 32 and cfg.model.n_ctx == 64
    assert not np.allclose(np.asarray(after["wte"]), np.asarray(before["wte"]))  # it trained the converted weights


def test_a_sharded_hf_checkpoint_converts_and_a_missing_shard_is_named(
    hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import GPTNeoForCausalLM

    from neo.train.checkpoint import load_run

    sharded = tmp_path / "sharded"
    GPTNeoForCausalLM.from_pretrained(hf_dir).save_pretrained(sharded, safe_serialization=True, max_shard_size="20KB")
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 2 and (sharded / "model.safetensors.index.json").is_file()
    assert run(["convert", "from-hf", str(sharded), str(tmp_path / "a")]) == 0
    assert run(["convert", "from-hf", str(hf_dir), str(tmp_path / "b")]) == 0
    _, from_shards, _ = load_run(tmp_path / "a")
    _, from_one, _ = load_run(tmp_path / "b")
    import jax

    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), from_shards, from_one)
    shards[1].unlink()
    capsys.readouterr()
    assert run(["convert", "from-hf", str(sharded), str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert shards[1].name in err and "download the missing files" in err and not (tmp_path / "c").exists()


def _hub_cache(root: Path, repo: str, files: dict[str, Path | str]) -> Path:
    """A Hugging Face cache holding `repo` at one revision, laid out as huggingface_hub writes it."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    for name, content in files.items():
        target = snapshot / name
        if isinstance(content, Path):
            target.write_bytes(content.read_bytes())
        else:
            target.write_text(content)
    return root


def test_from_hf_takes_a_hub_id_from_the_cache_offline_with_its_vocab_and_merges(
    hf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import jax
    from tokenizers import Tokenizer

    from neo.train.checkpoint import load_run

    vocab = {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4, "<|endoftext|>": 95}
    merges = "#version: 0.2\na b\nĠ ab\n"
    files = {"config.json": hf_dir / "config.json", "model.safetensors": hf_dir / "model.safetensors"}
    cache = _hub_cache(tmp_path / "hub", "tiny-org/gpt-neo-tiny", {**files, "vocab.json": json.dumps(vocab),
                                                                   "merges.txt": merges})  # fmt: skip
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # the id is not a local path here
    assert run(["convert", "from-hf", "tiny-org/gpt-neo-tiny", str(tmp_path / "run")]) == 0
    assert run(["convert", "from-hf", str(hf_dir), str(tmp_path / "direct")]) == 0
    _, from_hub, _ = load_run(tmp_path / "run")
    _, direct, _ = load_run(tmp_path / "direct")
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), from_hub, direct)
    tok = Tokenizer.from_file(str(tmp_path / "run" / "tokenizer.json"))  # GPT-2's byte-level BPE from the two files
    assert tok.encode("ab ab").ids == [2, 4] and tok.decode([2, 4]) == "ab ab"

    capsys.readouterr()
    assert run(["convert", "from-hf", "tiny-org/not-cached", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "'tiny-org/not-cached'" in err and "HF_HUB_OFFLINE" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists()


def test_to_hf_shards_and_transformers_pipeline_generates_what_neo_sample_does(
    tiny_dataset: dict[str, Path], tmp_path: Path, tiny_overrides, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from transformers import pipeline

    from neo.config import compose
    from neo.train.loop import train

    run_dir, out = tmp_path / "run", tmp_path / "hf"
    train(compose(tiny_overrides(tiny_dataset, run_dir, "train.steps=3", "train.eval_steps=0")), run_dir)
    assert run(["convert", "to-hf", str(run_dir), str(out), "--max-shard-size", "20KB"]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and set(index["weight_map"].values()) == {s.name for s in shards}
    assert not (out / "model.safetensors").exists()

    prompt = "the model learns"
    capsys.readouterr()
    assert run(["sample", str(run_dir), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "20"]) == 0
    ours = capsys.readouterr().out
    generate = pipeline("text-generation", model=str(out), device="cpu")
    theirs = generate(prompt, max_new_tokens=20, do_sample=False)[0]["generated_text"]
    assert len(ours) > len(prompt) and theirs == ours
    assert run(["convert", "to-hf", str(run_dir), str(tmp_path / "x"), "--max-shard-size", "lots"]) == 2
