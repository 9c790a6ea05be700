"""Clean stops on SIGINT / SIGTERM, and the name of what was running when they came.

The CLI installs :func:`handle_signals`: a signal then raises :class:`Interrupted`
where the program is, so every ``finally`` / context manager on the way up removes its
temporary files (staging folders, ``.train-*`` folders, ``*.tmp`` files) before the
process exits with ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM), the status
shells and batch schedulers expect. Long steps announce themselves with
:func:`stage`, so the one line printed on an interrupt says what was stopped.

:class:`Interrupted` derives from ``BaseException`` (like ``KeyboardInterrupt``), so
``except Exception`` blocks do not swallow it; it is *not* a ``KeyboardInterrupt``,
because Lightning turns those into ``sys.exit(1)``. Lightning calls the handler
installed here from its own SIGTERM handler, so training stops too.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

__all__ = ["Interrupted", "current_stage", "handle_signals", "stage"]

_STAGES: list[str] = []


class Interrupted(BaseException):
    """Raised by the signal handlers of :func:`handle_signals`.

    Attributes
    ----------
    signum
        The signal number.
    exit_code
        ``128 + signum``.
    during
        The step that was running when the signal came (see :func:`stage`).
    """

    def __init__(self, signum: int, during: str = "starting") -> None:
        self.signum = int(signum)
        self.during = during
        self.exit_code = 128 + self.signum
        try:
            self.name = signal.Signals(signum).name
        except ValueError:
            self.name = f"signal {signum}"
        super().__init__(f"interrupted by {self.name}")


@contextlib.contextmanager
def stage(what: str) -> Iterator[None]:
    """Announce a long step (``"training the default model"``) for the interrupt message.

    Examples
    --------
    >>> with stage("sampling"):
    ...     current_stage()
    'sampling'
    """
    _STAGES.append(what)
    try:
        yield
    finally:
        _STAGES.pop()


def current_stage() -> str:
    """The innermost step announced with :func:`stage` (``"starting"`` if none)."""
    return _STAGES[-1] if _STAGES else "starting"


def _raise(signum: int, frame: object) -> None:
    # a second signal while cleaning up must not cut the cleanup short
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum, current_stage())  # the stage, before unwinding pops it


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` inside the block (main thread only)."""
    sigs = (signal.SIGINT, signal.SIGTERM)
    try:
        old = {s: signal.signal(s, _raise) for s in sigs}
    except ValueError:  # not the main thread: leave the process's handlers alone
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
