"""SIGTERM ends a training run at the next step, cleanly.

SIGTERM is how schedulers preempt a job (Slurm, Kubernetes, cloud spot VMs) and what ``kill PID``
sends. Python's default is to die on the spot: no checkpoint of the steps since the last one, no
``finally`` blocks, and the batches that Grain's worker processes had prefetched into shared
memory stay in ``/dev/shm`` (RAM) after the process is gone.

:class:`StopOnSigterm` turns the signal into a request that the training loop honours at the end
of the step in flight: it saves a checkpoint of that step, closes the data iterator (releasing
the shared memory) and the checkpoint manager, and the process exits with status 143 (128 +
SIGTERM, what the default action reports). Re-running the same command resumes from that step.
A second SIGTERM while the first is pending terminates at once, as by default.

Only a single-process run in its main thread installs the handler: in a multi-host run each host
would stop at its own step and the others would wait for it in the next collective, so there the
default action is kept.
"""

from __future__ import annotations

import os
import signal
import threading

import jax

EXIT_STATUS = 128 + signal.SIGTERM


class StopOnSigterm:
    """Context manager: while active, SIGTERM sets :attr:`requested` instead of killing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.requested:  # the second one: the default action, now
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.requested = True

    def __enter__(self) -> StopOnSigterm:
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
