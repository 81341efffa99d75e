"""Random overrides and arguments never end in a traceback: a user error is one line and exit 2 (hypothesis)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neo.cli.app import run
from neo.config import NeoConfig

SECTIONS = {f.name: f.type for f in dataclasses.fields(NeoConfig)}


def _keys() -> list[str]:
    import typing

    hints = typing.get_type_hints(NeoConfig)
    keys = []
    for section, cls in hints.items():
        if dataclasses.is_dataclass(cls):
            keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


KEYS = _keys()
JUNK = st.text(alphabet="abcxyz019_.-:,=[]{}'\" +~/\\$%@", max_size=12)
VALUES = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.booleans().map(str),
    st.sampled_from(["", "null", "[]", "[1,2]", "[[global,2]]", "x:2,y:4", "batch:x", "tiny", "gs://", "-1", "0"]),
    JUNK,
)
OVERRIDE = st.one_of(
    st.tuples(st.sampled_from(KEYS), VALUES).map("=".join),
    st.tuples(st.sampled_from([*KEYS, "model", "mesh", "optimizer", "data", "nope.key", "model.n_layr"]), JUNK).map(
        "=".join
    ),
    st.sampled_from(["model=tiny", "model=xl", "model=xll", "mesh=cpu-8", "mesh=v3-256", "optimizer=adafactor"]),
    JUNK,
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(overrides=st.lists(OVERRIDE, max_size=4))
def test_config_show_never_tracebacks(overrides: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["config", "show", *overrides])  # anything but a NeoError or usage error propagates and fails here
    err = capsys.readouterr().err
    assert code in (0, 2), (overrides, code, err)
    assert "Traceback" not in err


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(OVERRIDE, max_size=3))
def test_train_dry_run_never_tracebacks(overrides: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    small = ["model=tiny", "model.n_vocab=512", "train.batch_size=8", "model.n_ctx=64"]
    code = run(["train", "--dry-run", *small, *overrides])
    err = capsys.readouterr().err
    assert code in (0, 2), (overrides, code, err)
    assert "Traceback" not in err
