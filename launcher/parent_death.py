"""Children that die with the launcher, whatever kills it (SIGKILL, OOM killer included).

``PR_SET_PDEATHSIG`` is set in the child between fork and exec (a ``preexec_fn``): it
survives the exec of a native binary such as tritonserver. The kernel sends the signal when
the *thread* that forked the child exits, so children must be started from a thread that
lives as long as the launcher (its main thread). Linux only; elsewhere children are
stopped by the launcher's own SIGTERM path alone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child only calls into it.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(signum: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``signum`` when this process dies."""
    if _libc is None:
        return None
    prctl = _libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            os._exit(126)  # refuse to run unguarded
        if os.getppid() != parent:  # the parent died before prctl: nobody will signal us
            os.kill(os.getpid(), signum)

    return preexec
