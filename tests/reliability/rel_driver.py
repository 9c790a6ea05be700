"""Run the real ``geodiffloc`` CLI in a subprocess with test stand-ins patched in.

Usage: ``python rel_driver.py <geodiffloc arguments>``. What is replaced:

* the bundled MiniLM text encoder by :class:`rel_helpers.HashWords` (instant), also
  when a checkpoint's recorded encoder (``test:hash-words``) is rebuilt by name;
* ``DEFAULT_MODEL_CONFIG`` by a tiny config (``REL_EPOCHS`` epochs, default 2), so
  "first-use training" of the default model takes seconds (or, with a large
  ``REL_EPOCHS``, runs until a signal stops it).

Hooks for the signal tests (environment variables; each names a marker file that is
created when the step starts, then the step is held for ``REL_HOLD`` seconds so the test
can signal the process while it is inside that step):

* ``REL_MARK_TRAIN``: the first training step of Lightning;
* ``REL_MARK_SAMPLE``: diffusion sampling;
* ``REL_MARK_WRITE``: after the GeoTIFF was written into the staging folder.

``REL_TRAIN_LOG`` names a file to which each default-model training appends a line
(the concurrency test counts them).

Everything else (the CLI, signal handling, locate, the writers) is the real code.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rel_helpers

import geodiffloc.encoders as encoders
import geodiffloc.encoders.text as text

# the package re-exports the function under the module's name: fetch the module itself
dm = importlib.import_module("geodiffloc.pipeline.default_model")

text.SentenceTransformerEncoder = rel_helpers.HashWords
dm.DEFAULT_MODEL_CONFIG = rel_helpers.tiny_config(int(os.environ.get("REL_EPOCHS", "2")))
_by_name = encoders.encoder_from_name
encoders.encoder_from_name = lambda name, **kw: (
    rel_helpers.HashWords() if name == rel_helpers.ENCODER_NAME else _by_name(name, **kw))


def _hook(owner: object, attr: str, env: str, after: bool = False) -> None:
    marker = os.environ.get(env)
    if not marker:
        return
    original = getattr(owner, attr)

    def wrapped(*args, **kwargs):
        if not after:
            _mark(marker)
        result = original(*args, **kwargs)
        if after:
            _mark(marker)
        return result

    setattr(owner, attr, wrapped)


def _mark(marker: str) -> None:
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        time.sleep(float(os.environ.get("REL_HOLD", "60")))


def _count_trainings() -> None:
    log = os.environ.get("REL_TRAIN_LOG")
    if not log:
        return
    original = dm.train_default_model

    def counted(*args, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return original(*args, **kwargs)

    dm.train_default_model = counted


if __name__ == "__main__":
    from geodiffloc import LocDiff
    from geodiffloc import geo as geo_pkg
    from geodiffloc.cli.main import main

    _hook(LocDiff, "training_loss", "REL_MARK_TRAIN")
    _hook(LocDiff, "sample", "REL_MARK_SAMPLE")
    _hook(geo_pkg, "to_geotiff", "REL_MARK_WRITE", after=True)
    _count_trainings()
    sys.exit(main(sys.argv[1:]))
