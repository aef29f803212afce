"""``audiokit train --nproc-per-node N``: DDP on one machine without torchrun.

Starts ``N`` processes of the same ``audiokit train`` command line, each with the environment torchrun
would give it (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` on loopback), so the trainer joins the same ``env://`` process group. Unlike torchrun it
adds nothing to what the processes print (an error stays one line), and a stop by signal ends with the
processes' own exit code (130, 143, 129) after they have saved their checkpoint.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from audiokit.errors import UsageError

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals passed on to every process: each stops its run after the current step, with a checkpoint."""
GRACE_SECONDS = 60.0
"""How long the other processes get to stop on their own once one has failed (each says why in one
line, or says nothing when the failure was another's), before they are killed."""


PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when the process that started it dies."""


def _stop_with(launcher: int) -> Callable[[], None] | None:
    """A ``Popen`` ``preexec_fn`` (Linux) after which the process gets SIGTERM (a stop with a checkpoint)
    when the launcher ``launcher`` (a pid) dies, even by SIGKILL, rather than training on unseen; None
    elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != launcher:  # the launcher died before prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for the process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(argv: Sequence[str], processes: int) -> int:
    """Run ``python -m audiokit train`` with ``argv`` (its arguments; ``--nproc-per-node 1`` is added) as
    ``processes`` ranks of one DDP run on this machine; returns the run's exit code: 0, the first failing
    process's code, or that of a stop by signal."""
    if "WORLD_SIZE" in os.environ:
        raise UsageError("--nproc-per-node: this process was started by torchrun (WORLD_SIZE is set)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if processes > cores:  # 200 on 2 cores ran the machine out of memory; the OOM killer took others
        raise UsageError(
            f"--nproc-per-node {processes}: this machine gives this process {cores} CPU core"
            f"{'' if cores == 1 else 's'}; start at most {cores} (each process needs a core of its own, and "
            "more only slow each other down and take memory)"
        )
    port = free_port()
    children: list[subprocess.Popen] = []
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    stop_with = _stop_with(os.getpid())
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        for rank in range(processes):
            env = {
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(processes),
                "LOCAL_WORLD_SIZE": str(processes),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            }
            # a session of its own: a terminal's Ctrl-C reaches the processes once, through forward()
            # (start_new_session, not process_group=0: that is Python 3.11+, and pyproject allows 3.10)
            command = [sys.executable, "-m", "audiokit", "train", *argv, "--nproc-per-node", "1"]
            children.append(subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=stop_with))
            if received:  # a signal while the ranks were being started: this one gets it too
                children[-1].send_signal(received[0])
        return _wait(children, received)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait(children: list[subprocess.Popen], received: list[int]) -> int:
    """Wait for every process; after the first failure, give the others :data:`GRACE_SECONDS`."""
    failed_at: float | None = None
    first_failure = 0
    while None in [child.poll() for child in children]:  # every child polled: a later rank may fail first
        stopped = {0, *(128 + signum for signum in received)}  # a stop asked for is not a failure
        failures = [child.returncode for child in children if child.returncode not in (None, *stopped)]
        if failures and failed_at is None:
            failed_at, first_failure = time.monotonic(), failures[0]
        if failed_at is not None and time.monotonic() - failed_at > GRACE_SECONDS:
            break  # the caller kills the rest
        time.sleep(0.1)
    codes = [child.returncode for child in children if child.returncode not in (None, 0)]
    causes = [c for c in codes if c != -signal.SIGABRT]
    if first_failure == -signal.SIGABRT and causes:
        first_failure = causes[0]  # gloo aborts a process whose peer has gone: that failure is the cause
    code = first_failure or (codes[0] if codes else 0)
    if received and all(c in (0, 128 + received[0]) for c in codes):
        return 128 + received[0]  # stopped by a signal: the processes' own code for it, as a single process's
    return code if code >= 0 else 128 - code  # a process killed by a signal: the shell's convention
