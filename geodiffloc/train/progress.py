"""Lightning's tqdm progress bar, drawn on stderr.

Lightning draws its bars on stdout, where they interleave with the results commands
print (``geodiffloc locate ... > results.txt`` would capture the bars). Progress is
diagnostics: it belongs on stderr, like every other tqdm bar in geodiffloc.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = ["StderrProgressBar"]


class StderrProgressBar(TQDMProgressBar):
    """:class:`~lightning.pytorch.callbacks.TQDMProgressBar` that writes to stderr."""

    # Lightning passes ``file=sys.stdout`` when it builds each bar: swapping sys.stdout
    # while the bar is built is the one hook that needs no copy of Lightning's code.
    def init_sanity_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()

    def init_train_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_predict_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_predict_tqdm()

    def init_test_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_test_tqdm()
