"""Preemption: SIGTERM / SIGUSR1 / SIGUSR2 set a flag; the training loop saves and exits.

SLURM sends SIGUSR1 (or USR2 under submitit) before the time limit and SIGTERM on preemption or
scancel. The handler only records the signal (no I/O in a signal handler); the loop checks the
flag every env step, saves the resume state at the last update boundary and returns. Then, in
SLURM and with `requeue=true`, the job is requeued: through submitit's own handler when submitit
installed one (it resubmits the same Hydra job), else with `scontrol requeue $SLURM_JOB_ID`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGUSR1", "SIGUSR2")) if s)


class PreemptionFlag:
    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "PreemptionFlag":
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a library thread): no signals
                break
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def requeue(self) -> str:
        """Requeue the SLURM job that was signalled; returns what was done (for the log)."""
        job_id = os.environ.get("SLURM_JOB_ID")
        if not job_id or self.signum is None:
            return "not in SLURM: no requeue"
        previous = self._previous.get(self.signum)
        owner = getattr(getattr(previous, "__self__", None), "__class__", type(None)).__module__
        if callable(previous) and owner.startswith("submitit"):
            sys.stdout.flush()
            previous(self.signum, None)  # submitit checkpoints the Hydra job, requeues and exits
            return "requeued by submitit"
        try:
            subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
            return f"requeued SLURM job {job_id}"
        except (OSError, subprocess.SubprocessError) as exc:
            return f"scontrol requeue {job_id} failed: {exc}"
