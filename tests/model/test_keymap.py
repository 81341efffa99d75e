"""The declarative key maps: every layout inverts, and a format's read and write are inverses on every tensor."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from neo.model import keymap
from neo.model.config import ModelConfig
from neo.model.hf import HF, HF_UNTIED
from neo.model.mtf import MTF
from neo.model.params import init_params

LAYOUTS = [v for v in vars(keymap).values() if isinstance(v, keymap.Layout)]
CFG = ModelConfig(n_vocab=31, n_ctx=16, n_embd=12, n_head=3, n_layer=2, attention_types=[[["global", "local"], 1]])
NEO_SHAPES = {"[embd, heads, head_dim]": (12, 3, 4), "[heads, head_dim, embd]": (3, 4, 12)}


def _flat(tree: dict) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(path): np.asarray(v) for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_every_layout_inverts(layout: keymap.Layout) -> None:
    shape = next((s for side, s in NEO_SHAPES.items() if layout.name.endswith(side)), (12, 12))
    a = np.random.RandomState(0).randn(*shape).astype(np.float32)
    np.testing.assert_array_equal(layout.to_neo(layout.from_neo(a, CFG), CFG), a)


@pytest.mark.parametrize("fmt", [HF, HF_UNTIED, MTF], ids=["hf", "hf-untied", "mtf"])
@pytest.mark.parametrize("scan", [True, False])
def test_write_then_read_gives_every_tensor_back(fmt: keymap.Format, scan: bool) -> None:
    cfg = dataclasses.replace(CFG, scan_layers=scan, no_weight_tie=fmt is HF_UNTIED)
    params = _flat(init_params(cfg))
    theirs = fmt.write(cfg, init_params(cfg))
    assert len(theirs) == len(fmt.model) + cfg.n_layer * (len(fmt.attention) + len(fmt.mlp))
    back = _flat(fmt.read(cfg, theirs.__getitem__))
    assert back.keys() == params.keys()
    for name, value in params.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
