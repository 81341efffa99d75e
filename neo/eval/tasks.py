"""`neo eval RUN --tasks ...`: lm-evaluation-harness tasks on a run, checked up front, results kept in the run.

Task names are checked against lm-eval's index (its own tasks plus the YAMLs under --include-path) before any model
is loaded, and each task is built (its data read) one at a time, so an unknown name or a task whose data cannot be
found is one line naming the task and the fix, not a traceback from deep inside `datasets`.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any

from neo import storage
from neo.errors import DataError


@dataclass
class TaskScores:
    """lm-eval's full results (JSON-safe) and one row per (task, metric): what `neo eval` prints and logs."""

    results: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    path: str | None = None  # where the JSON was written


def task_manager(include_path: str | None, defaults: bool = True) -> Any:
    """lm-eval's TaskManager over the YAMLs in `include_path`, and over lm-eval's own tasks with `defaults`."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not os.path.isdir(include_path):
        raise DataError(f"--include-path {include_path} is not a directory; pass a folder of lm-eval task YAMLs")
    return TaskManager(include_path=include_path, include_defaults=defaults)


def parse_tasks(spec: str | list[str]) -> list[str]:
    names = spec.split(",") if isinstance(spec, str) else [n for s in spec for n in s.split(",")]
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise DataError("--tasks is empty; pass task names such as lambada_openai,hellaswag")
    return names


def check_names(manager: Any, names: list[str]) -> None:
    """A DataError naming the first unknown task (with the closest known names) and how to add one."""
    known = set(manager.all_tasks)
    for name in names:
        if name in known or (name.endswith((".yaml", ".yml")) and os.path.isfile(name)):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise DataError(
            f"unknown task {name!r}: {hint}list lm-eval's tasks with `lm_eval ls tasks`, or pass --include-path DIR "
            "holding its YAML"
        )


def load_tasks(manager: Any, names: list[str]) -> list[Any]:
    """The lm-eval Task/Group objects, built one name at a time so a failure names its task."""
    built: list[Any] = []
    for name in names:
        try:
            loaded = manager.load([name])
        except (OSError, ValueError, ImportError) as exc:  # datasets / hub: missing files, offline, bad data_files
            reason = " ".join(str(exc).split())[:300]
            raise DataError(
                f"task {name!r}: its data could not be loaded ({type(exc).__name__}: {reason}); fetch it once with "
                "network access (the Hugging Face cache keeps it), or point the task's dataset_path/data_files at "
                "local files in a YAML under --include-path"
            ) from None
        if name in loaded["groups"]:
            built.append(loaded["groups"][name])
        else:
            built.extend(loaded["tasks"].values())
    return built


def metric_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """[{"task", "metric", "value", "stderr"}] from lm-eval's results (groups included), stderr None when absent.

    lm-eval keys metrics "name,filter"; the filter is kept in the name only when it is not the default "none".
    """
    rows = []
    for section in ("results", "groups"):
        for task, metrics in results.get(section, {}).items():
            for key, value in metrics.items():
                if "," not in key or "_stderr," in key or not isinstance(value, int | float):
                    continue
                name, filt = key.split(",", 1)
                stderr = metrics.get(f"{name}_stderr,{filt}")
                rows.append(
                    {
                        "task": task,
                        "metric": name if filt == "none" else f"{name}/{filt}",
                        "value": float(value),
                        "stderr": float(stderr) if isinstance(stderr, int | float) else None,
                    }
                )
    return rows


def run_tasks(
    run_dir: str,
    tasks: str | list[str],
    *,
    include_path: str | None = None,
    limit: int | float | None = None,
    batch_size: int | None = None,
    num_fewshot: int | None = None,
    mesh: str | None = None,
    layout: str | None = None,
    seed: int = 0,
    bootstrap_iters: int = 100000,
    write: bool = True,
) -> TaskScores:
    """Evaluate a run (or a HF GPT-Neo dir) on lm-eval tasks; with `write`, keep the results in the run directory."""
    from lm_eval import simple_evaluate
    from lm_eval.utils import handle_non_serializable

    from neo.eval.harness import NeoLM
    from neo.eval.results import json_safe, save_results

    names = parse_tasks(tasks)
    if not storage.isdir(run_dir):
        raise DataError(f"{run_dir} does not exist; pass a run directory (neo train / neo convert from-hf)")
    built, manager = None, None
    if include_path is not None:  # indexing lm-eval's ~15,000 own tasks takes 10-20 s: not when --include-path has all
        manager = task_manager(include_path, defaults=False)
        if set(names) <= set(manager.all_tasks):
            try:
                built = load_tasks(manager, names)
            except KeyError:  # a group there names one of lm-eval's own tasks
                built = None
    if built is None:
        manager = task_manager(include_path)
        check_names(manager, names)
        built = load_tasks(manager, names)
    lm = NeoLM(run=run_dir, batch_size=batch_size, mesh=mesh, layout=layout, seed=seed)
    results = simple_evaluate(
        model=lm,
        tasks=built,
        num_fewshot=num_fewshot,
        batch_size=lm.batch_size,
        limit=limit,
        log_samples=False,
        bootstrap_iters=bootstrap_iters,
        task_manager=manager,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=None,  # neo does not use torch (lm-eval still imports it for its environment report)
        fewshot_random_seed=seed,
    )
    results = json_safe(results, handle_non_serializable)
    results["config"]["model"] = "neo"
    results["config"]["model_args"] = f"run={run_dir}"
    scores = TaskScores(results=results, rows=metric_rows(results))
    if write:
        scores.path = save_results(run_dir, results, scores.rows)
    return scores
