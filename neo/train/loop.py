"""The training loop: one run directory in, a trained (or further trained) run directory out.

A run directory is the unit of state. Starting `train` on one that holds a checkpoint resumes it: parameters,
optimizer state and step come from the checkpoint; dropout keys and data batches are pure functions of (seed, step),
so the resumed run continues exactly as the uninterrupted one would. SIGTERM (preemption) saves and exits cleanly;
a non-finite loss stops the run before anything is saved, so the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from neo import storage
from neo.config import NeoConfig, to_yaml
from neo.errors import CheckpointError, ConfigError, DataError, TrainingError
from neo.train.checkpoint import Checkpoints, load_run_config, load_snapshot, restore_run_params
from neo.train.metrics import MetricsWriter, flops_per_token
from neo.train.prefetch import Prefetch
from neo.train.profile import StepProfiler
from neo.train.run_lock import run_lock
from neo.train.session import Session, build_session

StepHook = Callable[[dict[str, Any]], None]


@dataclass
class Hooks:
    """What the caller (the CLI) wants to hear about; the loop itself renders nothing."""

    on_start: StepHook = lambda info: None
    on_step: StepHook = lambda row: None  # a logged step's metrics (every train.log_every steps)
    on_advance: Callable[[int], None] = lambda step: None  # every step, as it is dispatched (no device sync)
    on_eval: StepHook = lambda row: None
    on_checkpoint: StepHook = lambda info: None
    on_predict: StepHook = lambda row: None
    on_warning: Callable[[str], None] = logging.getLogger("neo").warning  # e.g. a damaged checkpoint skipped


@dataclass
class TrainResult:
    run_dir: str
    start_step: int
    final_step: int
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    stopped_by_signal: int | None = None  # the signal (SIGTERM, SIGINT) that stopped the run after a checkpoint


def prepare_run_dir(cfg: NeoConfig, run_dir: str) -> None:
    """Write the config snapshot, or check that a resumed run keeps the model it was trained with."""
    snapshot = storage.join(run_dir, "config.yaml")
    if storage.exists(snapshot):
        previous = load_snapshot(run_dir)
        if previous.model != cfg.model:
            was, now = dataclasses.asdict(previous.model), dataclasses.asdict(cfg.model)
            diff = "; ".join(f"model.{k}: run {was[k]!r}, now {now[k]!r}" for k in was if was[k] != now.get(k))
            raise CheckpointError(
                f"{run_dir} holds a run of a different model ({diff}); resume with the run's settings (its "
                "config.yaml) or start a new --run-dir"
            )
    storage.makedirs(run_dir)
    storage.write_atomic(snapshot, to_yaml(cfg))


def inherit_run_model(cfg: NeoConfig, run_dir: str, overrides: list[str]) -> tuple[NeoConfig, bool]:
    """`cfg` with the run directory's own model config when the command line names no model (no `model=` and no
    `model.*` override): resuming or fine-tuning a run (a converted one too) needs no restating of its shape. Returns
    whether the run's model was taken."""
    named = any(o.split("=", 1)[0].lstrip("+~").split(".", 1)[0] == "model" for o in overrides)
    snapshot = storage.join(run_dir, "config.yaml")
    if named or not storage.exists(snapshot):
        return cfg, False
    return dataclasses.replace(cfg, model=load_snapshot(run_dir).model), True


class _StopFlag:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps (save, then exit cleanly). A second Ctrl-C
    stops at once (KeyboardInterrupt): checkpoints commit atomically, so an interrupted save is never loaded."""

    def __init__(self) -> None:
        self.signalled: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signalled == signal.SIGINT:
            raise KeyboardInterrupt
        self.signalled = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def evaluate(session: Session, params: Any) -> dict[str, float] | None:
    """Mean eval loss over `eval_steps` batches, with perplexity and bits per byte from the dataset card."""
    batches = session.eval_batches()
    if batches is None:
        return None
    losses = [float(session.eval_step(params, session.global_batch(b))) for b in batches]
    if not losses:
        return None
    loss = float(np.mean(losses))
    row = {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}
    if session.bytes_per_token:
        row["eval_bpb"] = loss / math.log(2) / session.bytes_per_token
    return row


def train(cfg: NeoConfig, run_dir: str | Path, hooks: Hooks | None = None) -> TrainResult:
    """Train (or resume) the run in `run_dir` until `train.steps`."""
    hooks = hooks or Hooks()
    run_dir = os.fspath(run_dir)
    is_chief = jax.process_index() == 0
    if cfg.train.predict_steps and jax.process_count() > 1:
        raise ConfigError("train.predict_steps samples on one process only for now; set train.predict_steps=0")
    session = build_session(cfg, run_dir)  # every user error (config, data, layout) surfaces before anything is written
    with run_lock(run_dir, hooks.on_warning) if is_chief else contextlib.nullcontext():
        return _train(cfg, run_dir, session, hooks)


def _train(cfg: NeoConfig, run_dir: str, session: Session, hooks: Hooks) -> TrainResult:
    run = _Run(cfg, run_dir, session, hooks)
    with _StopFlag() as stop, Prefetch(session.train_batches(run.step), session.global_batch) as batches:
        try:
            run.loop(batches, stop)
        finally:
            run.close()
    run.result.final_step = run.step
    return run.result


class _Run:
    """One `train` call on a run directory: its state, checkpoints and metrics, and the steps of the loop."""

    def __init__(self, cfg: NeoConfig, run_dir: str, session: Session, hooks: Hooks) -> None:
        """Prepare the directory, restore or initialise the state, open the trackers, report the start, and
        evaluate the untrained model once."""
        self.cfg, self.tcfg, self.run_dir, self.session, self.hooks = cfg, cfg.train, run_dir, session, hooks
        self.is_chief = jax.process_index() == 0
        if self.is_chief:
            prepare_run_dir(cfg, run_dir)
            if session.card is not None:
                copy_tokenizer(storage.join(cfg.data.dir, session.card.tokenizer), run_dir)
        tcfg = self.tcfg
        self.ckpts = Checkpoints(run_dir, keep=tcfg.keep_checkpoints, async_save=tcfg.async_checkpointing)
        self.state, self.step = session.initial_state(self.ckpts, hooks.on_warning)
        self.start_step = self.saved = self.step
        self.writer = MetricsWriter(
            run_dir,
            enabled=self.is_chief,
            trackers=tcfg.trackers,
            wandb_project=tcfg.wandb_project,
            config=dataclasses.asdict(cfg),
        )
        self.profiler = StepProfiler(run_dir, tcfg.profile_steps)
        self.writer.truncate_after(self.step)
        self.result = TrainResult(run_dir=run_dir, start_step=self.step, final_step=self.step)
        tokens_per_step = tcfg.batch_size * cfg.model.n_ctx
        peak = session.peak_flops * session.mesh.devices.size if session.peak_flops else 0.0
        self.meter = _Meter(tokens_per_step, flops_per_token(cfg.model, session.n_params), peak)
        self.pending: list[tuple[int, dict[str, Any]]] = []  # dispatched steps whose metrics nobody has read yet
        self.eval_every = tcfg.eval_every or tcfg.checkpoint_every
        hooks.on_start(
            {
                "start_step": self.step,
                "steps": tcfg.steps,
                "n_params": session.n_params,
                "devices": session.mesh.devices.size,
                "mesh": dict(session.mesh.shape),
                "tokens_per_step": tokens_per_step,
            }
        )
        if self.step == 0 and tcfg.eval_steps:
            self.evaluate_and_log(0)

    def loop(self, batches: Iterator[Any], stop: _StopFlag) -> None:
        """Step until `train.steps` or a signal; reads metrics from the devices only when they are logged, and
        before any evaluation or checkpoint."""
        while self.step < self.tcfg.steps:
            batch = self.next_batch(batches)
            self.profiler.before(self.step + 1)
            self.state, metrics = self.session.train_step(self.state, batch)
            self.step += 1
            self.profiler.after(self.step, metrics)
            self.pending.append((self.step, metrics))
            self.hooks.on_advance(self.step)
            if self.after_step(stop):
                break
        self.drain()

    def next_batch(self, batches: Iterator[Any]) -> Any:
        """The next batch; a damaged shard met mid-run keeps what was trained, then stops in one line."""
        try:
            return next(batches)
        except DataError:
            if self.step > self.saved:
                self.drain()
                self.save(self.step)
            raise

    def after_step(self, stop: _StopFlag) -> bool:
        """Log, evaluate, checkpoint and sample as the step number says; True when a signal ends the run."""
        tcfg, step = self.tcfg, self.step
        signalled = stop.signalled is not None  # read once: a signal arriving later waits for the next step
        save_now = step % tcfg.checkpoint_every == 0 or step == tcfg.steps or signalled
        eval_now = bool(tcfg.eval_steps) and (step % self.eval_every == 0 or step == tcfg.steps)
        first = step == self.start_step + 1  # compiled just now: time the steps after it on their own
        if save_now or eval_now or first or step % tcfg.log_every == 0:
            self.drain()  # the loss must be known finite before anything is saved
        if eval_now:
            self.evaluate_and_log(step)
        if save_now:
            self.save(step)
            if tcfg.predict_steps and self.is_chief:
                row = predict(self.cfg, self.run_dir, self.state["params"], step)
                if row is not None:
                    self.hooks.on_predict(row)
        if signalled:
            self.result.stopped_by_signal = stop.signalled
            return True
        if save_now or eval_now or first:
            self.meter.restart_clock()
        return False

    def drain(self) -> None:
        """Read the pending steps' metrics (the loop's one device-to-host sync), check the loss, log, report."""
        rows = self.meter.rows(self.pending)
        self.pending.clear()
        for row in rows:
            self.result.losses.append((row["step"], row["loss"]))
            if row["step"] % self.tcfg.log_every == 0 or row["step"] == self.tcfg.steps:
                self.writer.write(row)
        if rows:
            self.hooks.on_step(rows[-1])

    def evaluate_and_log(self, step: int) -> None:
        row = evaluate(self.session, self.state["params"])
        if row:
            self.result.eval_losses.append((step, row["eval_loss"]))
            self.writer.write({"step": step, **row})
            self.hooks.on_eval({"step": step, **row})

    def save(self, step: int) -> None:
        self.writer.flush()  # an object-store run dir then holds every row up to this checkpoint
        self.ckpts.save(step, self.state, {"seed": self.tcfg.seed})
        self.saved = step
        self.hooks.on_checkpoint({"step": step})

    def close(self) -> None:
        self.profiler.stop()
        self.ckpts.close()
        self.writer.close()


class _Meter:
    """Turns dispatched steps' metrics into logged rows: loss, lr, grad norm, tokens/s and MFU over the steps since
    the last reading (evaluation and checkpoint time excluded)."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak_flops: float) -> None:
        self.tokens_per_step, self.flops_per_token, self.peak_flops = tokens_per_step, flops_per_token, peak_flops
        self.clock, self.steps_timed = time.perf_counter(), 0

    def restart_clock(self) -> None:
        self.clock, self.steps_timed = time.perf_counter(), 0

    def rows(self, pending: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        if not pending:
            return []
        values = jax.device_get([metrics for _, metrics in pending])  # waits for the last of them
        now = time.perf_counter()
        self.steps_timed += len(pending)
        tps = self.tokens_per_step * self.steps_timed / max(now - self.clock, 1e-9)
        self.clock, self.steps_timed = now, 0
        rows = []
        for (step, _), metrics in zip(pending, values, strict=True):
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss} at step {step}; the last good checkpoint is kept — lower optimizer.lr "
                    "or raise optimizer.warmup_steps, then rerun the same command to resume"
                )
            rows.append(
                {
                    "step": step,
                    "loss": loss,
                    "lr": float(metrics["lr"]),
                    "grad_norm": float(metrics["grad_norm"]),
                    "ce_loss": float(metrics["ce_loss"]),  # loss = ce_loss + aux_loss
                    "aux_loss": float(metrics["aux_loss"]),  # z-loss and the MoE balance losses (0 without them)
                    "tokens_per_sec": tps,
                    "mfu": tps * self.flops_per_token / self.peak_flops if self.peak_flops else 0.0,
                }
            )
        return rows


def predict(cfg: NeoConfig, run_dir: str, params: Any, step: int) -> dict[str, Any] | None:
    """GPT-Neo's `predict_steps`: a greedy sample from `train.predict_prompt`, appended to RUN_DIR/samples.jsonl."""
    import json

    from neo.data.tokenizer import eos_id, load_tokenizer
    from neo.infer.sampling import Loaded, sample_texts

    tok_path = storage.join(run_dir, "tokenizer.json")
    if not storage.isfile(tok_path):
        return None
    tok = load_tokenizer(tok_path)
    loaded = Loaded(model=cfg.model, params=params, tokenizer=tok, eos_id=eos_id(tok))
    prompt = cfg.train.predict_prompt
    text = sample_texts(loaded, [prompt], max_new_tokens=cfg.train.predict_steps, temperature=0.0)[0]
    row = {"step": step, "prompt": prompt, "text": text}
    samples = storage.join(run_dir, "samples.jsonl")
    previous = storage.read_text(samples) if storage.exists(samples) else ""  # object stores cannot append
    storage.write_atomic(samples, previous + json.dumps(row) + "\n")
    return row


def copy_tokenizer(src: str | None, run_dir: str) -> None:
    """Keep the run self-contained: sampling and eval find the tokenizer beside the checkpoints."""
    dst = storage.join(run_dir, "tokenizer.json")
    if src is not None and storage.exists(src) and not storage.exists(dst):
        storage.copy(src, dst)


def evaluate_run(run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, float]:
    """`neo eval`: the eval metrics of a run's latest checkpoint on its eval data (data.eval_dir)."""
    run_dir = os.fspath(run_dir)
    cfg = load_run_config(run_dir, overrides)
    if not cfg.data.eval_dir:
        raise TrainingError("the run has no data.eval_dir; pass data.eval_dir=DIR (written by `neo data encode`)")
    session = build_session(cfg, run_dir)
    params, step = restore_run_params(run_dir, session.layout.abstract["params"])
    row = evaluate(session, params)
    if row is None:
        raise TrainingError("no eval batches: set train.eval_steps above 0")
    return {"step": step, **row}
