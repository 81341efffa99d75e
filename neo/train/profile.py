"""`train.profile_steps=[first,last]`: a `jax.profiler` trace of those training steps, in the run directory.

The trace starts just before step `first` is dispatched and stops once step `last` has finished on the device, so it
holds those steps' host and device work and nothing of the compile before them (unless `first` is 1). It is written
to `RUN/profile/plugins/profile/<timestamp>/`: `*.xplane.pb` for TensorBoard's profile tab
(`pip install tensorboard-plugin-profile; tensorboard --logdir RUN/profile`) and `perfetto_trace.json.gz` for
https://ui.perfetto.dev. A run directory in a bucket gets the trace uploaded when it stops.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import jax

from neo import storage

PROFILE_DIR = "profile"


class StepProfiler:
    """Starts and stops the trace around the configured steps; inert when `steps` is empty."""

    def __init__(self, run_dir: str | os.PathLike[str], steps: Sequence[int], enabled: bool = True) -> None:
        self.first, self.last = (int(steps[0]), int(steps[1])) if steps and enabled else (0, -1)
        self.url = storage.join(run_dir, PROFILE_DIR)
        self._stage: tempfile.TemporaryDirectory[str] | None = None
        self._active = False

    def before(self, step: int) -> None:
        """Call before dispatching `step` (1-based)."""
        if step != self.first or self._active:
            return
        if storage.is_remote(self.url):
            self._stage = tempfile.TemporaryDirectory(prefix="neo-profile-")
            local = self._stage.name
        else:
            storage.makedirs(self.url)
            local = self.url
        jax.profiler.start_trace(local, create_perfetto_trace=True)
        self._active = True

    def after(self, step: int, outputs: Any) -> None:
        """Call after dispatching `step` with what it returned: the trace stops once those are computed."""
        if self._active and step >= self.last:
            jax.block_until_ready(outputs)
            self.stop()

    def stop(self) -> None:
        """End the trace (also when the run stops before `last`) and upload it if the run directory is remote."""
        if not self._active:
            return
        self._active = False
        jax.profiler.stop_trace()
        if self._stage is not None:
            try:
                storage.upload_dir(self._stage.name, self.url)
            finally:
                self._stage.cleanup()
                self._stage = None
