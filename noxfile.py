"""Developer sessions: `nox -s tests` (the default suite), `gpu_aot`, `slow`, `lint`, `demo`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

RUFF = "ruff==0.17.6"


@nox.session
def tests(session: nox.Session) -> None:
    """Everything not marked slow, on 8 simulated CPU devices (under 15 minutes on 2 cores).

    The `aot` extra adds libtpu on Linux x86-64, so the TPU ahead-of-time compile tests run instead of skipping; the
    `serve` extra brings the server and its test clients, and Debian's chromium (when missing) the browser that
    Playwright drives for the playground test (never `playwright install`: no browser downloads); `wandb` the W&B
    tracker, and `eval` lm-evaluation-harness for `neo eval --tasks`.
    """
    session.install(".[test,hf,aot,wandb,eval,serve]")
    _system_chromium(session)
    # the slowest tests' times in every log: the suite must stay under 15 minutes on 2 cores
    session.run("python", "-m", "pytest", "-m", "not slow and not gpu_aot", "--durations=15", *session.posargs)


@nox.session
def gpu_aot(session: nox.Session) -> None:
    """GPU train steps compiled ahead of time for H100s by XLA's GPU compiler, with no GPU or driver here: the
    `cuda` extra (jax[cuda12], ~5 GB of CUDA libraries) in an environment of its own."""
    session.install(".[test,cuda]")
    session.run("python", "-m", "pytest", "tests/train/test_kernels_gpu_aot.py", *session.posargs)


def _system_chromium(session: nox.Session) -> None:
    """Debian's chromium at /usr/bin/chromium, installed with apt-get when it is missing (CI runs as root)."""
    import os

    if not os.path.exists("/usr/bin/chromium"):
        session.run("apt-get", "update", external=True)
        session.run("apt-get", "install", "-y", "--no-install-recommends", "chromium", external=True)


@nox.session
def slow(session: nox.Session) -> None:
    """The slow suite: large-model dry runs (TPU pods through libtpu), long training comparisons, benchmarks."""
    session.install(".[test,hf,aot,wandb,eval,serve]")
    session.run("python", "-m", "pytest", "-m", "slow and not gpu_aot", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def demo(session: nox.Session) -> None:
    """The quickstart, end to end, from a non-editable install."""
    session.install(".")
    session.run("neo", "quickstart", "--workdir", session.create_tmp(), external=False)
