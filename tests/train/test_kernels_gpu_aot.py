"""The cuDNN kernels compile for real GPUs: train steps compiled ahead of time by XLA's GPU compiler (the `cuda`
extra's jax-cuda12 plugin) for H100s that are not here, no GPU or driver needed. Run by `nox -s gpu_aot`, which
installs the plugin in an environment of its own (marker `gpu_aot`; the default suite deselects them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata

import pytest

from neo.config import compose
from neo.parallel.gpu_targets import board_name
from neo.parallel.presets import presets
from neo.parallel.targets import compiler_name, target_devices
from neo.train.dry_run import dry_run
from tests.train.aot_common import GLOBAL_LOCAL, compiled_text


def _has_cuda_plugin() -> bool:
    try:
        metadata.version("jax-cuda12-plugin")
    except metadata.PackageNotFoundError:
        return False
    return True


pytestmark = [
    pytest.mark.gpu_aot,
    pytest.mark.skipif(not _has_cuda_plugin(), reason="needs the `cuda` extra (jax[cuda12]): run nox -s gpu_aot"),
]
SMALL = [*GLOBAL_LOCAL, "mesh=gpu-8"]  # on one H100 node: model.precision=auto is bfloat16, so auto is cudnn


def _fmha_calls(hlo: str) -> list[tuple[str, int, str, float]]:
    """(custom-call target, sliding window, mask type, score scale) of every cuDNN attention call in `hlo`."""
    calls = []
    for line in hlo.splitlines():
        target = re.search(r'custom_call_target="(__cudnn\$fmha[^"]*)"', line)
        if target is None:
            continue
        window = re.search(r'"sliding_window_length":\s*"?(\d+)', line)
        mask = re.search(r'"mask_type":\s*"(\w+)"', line)
        scale = re.search(r'"fmha_scale":\s*([-\d.e]+)', line)
        assert window and mask and scale, line[:300]
        calls.append((target.group(1), int(window.group(1)), mask.group(1), float(scale.group(1))))
    return calls


def test_every_gpu_preset_compiles_for_its_gpus_ahead_of_time() -> None:
    gpu_presets = {name: cfg for name, cfg in presets().items() if cfg.platform == "gpu"}
    assert gpu_presets
    for name, cfg in gpu_presets.items():
        devices, exact = target_devices(cfg)
        assert exact and len(devices) == cfg.devices, name
        assert devices[0].device_kind == board_name(cfg.device_kind), name
        assert "XLA GPU compiler (jax-cuda12" in compiler_name(devices, exact), name
    cluster = compose(["mesh=gpu-8", "mesh.devices=32"]).mesh  # the README's SLURM example: four nodes of eight
    devices, exact = target_devices(cluster)
    assert exact and len(devices) == 32
    assert {d.process_index for d in devices} == {0, 1, 2, 3}


def test_auto_compiles_cudnn_flash_attention_with_gpt_neo_masks_into_an_h100_train_step() -> None:
    """Global layers: causal, no window; local layers: causal within 128 keys (i-127..i); no score scaling."""
    impl, hlo = compiled_text(SMALL)  # mesh=gpu-8 resolves model.precision=auto to bfloat16, so auto to cudnn
    assert impl == "cudnn"
    calls = sorted(_fmha_calls(hlo))
    assert calls == [
        ("__cudnn$fmhaSoftmax", 0, "CAUSAL", 1.0),
        ("__cudnn$fmhaSoftmax", 128, "CAUSAL", 1.0),
        ("__cudnn$fmhaSoftmaxBackward", 0, "CAUSAL", 1.0),
        ("__cudnn$fmhaSoftmaxBackward", 128, "CAUSAL", 1.0),
    ], calls


def test_cudnn_runs_per_gpu_on_the_batch_and_heads_the_layout_gives_it() -> None:
    """`batch:x,heads:y` on a 2x4 mesh: each GPU's kernel sees 16/2 sequences and 8/4 heads (BNTH: [8, 2, 256, 8])."""
    layout = ["mesh.shape=x:2,y:4", "mesh.layout=batch:x,heads:y", "model.n_head=8"]
    impl, hlo = compiled_text([*SMALL, *layout])
    assert impl == "cudnn"
    shapes = re.findall(r"= \(?(\w+\[[\d,]+\])[^\n]*custom_call_target=\"__cudnn\$fmha", hlo)
    assert shapes and set(shapes) == {"bf16[8,2,256,8]"}, shapes


def test_xla_and_float32_models_on_a_gpu_use_no_cudnn_attention() -> None:
    impl, hlo = compiled_text([*SMALL, "model.attention_impl=xla"])
    assert impl == "xla" and not _fmha_calls(hlo)
    impl, hlo = compiled_text([*SMALL, "model.precision=float32"])  # cuDNN takes no float32: auto picks xla
    assert impl == "xla" and not _fmha_calls(hlo)


def test_neo_train_dry_run_for_gpus_as_a_user_types_it(tmp_path) -> None:
    """The whole command in a fresh process, with JAX free to look for GPUs: no driver here, yet the plugin loads."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "JAX_SKIP_CUDA_CONSTRAINTS_CHECK")}
    neo = [sys.executable, "-c", "from neo.cli.entry import main; main()"]
    done = subprocess.run(
        [*neo, "train", *SMALL, "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "XLA GPU compiler (jax-cuda12" in done.stdout and "for 8 × NVIDIA H100 80GB HBM3: exact" in done.stdout
    assert "attention kernel: cudnn, activations: bfloat16" in done.stdout
    # the GPU compiler counts no FLOPs ahead of time: a lower bound on the step, and no MFU claimed
    assert "est. step ≥" in done.stdout and "est. MFU" not in done.stdout
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"


def test_gpt3_xl_fits_one_h100_node_with_cudnn_attention() -> None:
    report = dry_run(compose(["model=gpt3_xl", "mesh=gpu-8", "model.attention_impl=cudnn"]))
    assert report.exact and "XLA GPU compiler" in report.compiler and not report.error, report.summary()
    assert report.fits and report.temp_bytes > 0, report.summary()
