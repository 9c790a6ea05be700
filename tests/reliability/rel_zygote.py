"""A clean process that forks one child per fault-injection run (``test_faults.py``).

Forking the test process itself is unsafe: by then it runs helper threads (GDAL,
allocator background threads) whose locks a child can inherit held, and hang. This
process imports the library, runs nothing, and for each JSON request on stdin forks a
child that runs one ``locate`` (or one first-use training) and SIGKILLs itself at the
requested point; it answers one JSON line per request with how the child ended.

Requests: ``{"job": "locate", "out": DIR, "model": PATH, "kill_at_replace": K,
"kill_after_s": S}`` or ``{"job": "train", "cache": DIR, "epochs": N,
"kill_after_train_dir_s": S}`` (kill S seconds after the ``.train-*`` folder appears);
``kill_*`` are optional (absent: run to the end).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from rel_helpers import HashWords, tiny_config

from geodiffloc.pipeline import default_model, locate

QUERIES = ["Kyoto temple", "a harbour in Norway"]


def run_locate(out: str, model: str) -> None:
    locate(QUERIES, model=model, encoder=HashWords(), out_dir=out, resolution=10.0,
           n_samples=2, sampler="ddim", steps=2, progress=False, countries_scale="lowres")


def run_train(cache: str, epochs: int) -> None:
    default_model(config=tiny_config(epochs), encoder=HashWords(), cache_dir=cache,
                  progress=False)


def child(req: dict) -> None:
    torch.set_num_threads(1)
    if req.get("kill_at_replace"):
        real, count = os.replace, [0]

        def replace(a, b):
            count[0] += 1
            if count[0] == req["kill_at_replace"]:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(a, b)

        os.replace = replace
    if req.get("kill_after_s"):
        signal.signal(signal.SIGALRM, lambda *a: os.kill(os.getpid(), signal.SIGKILL))
        signal.setitimer(signal.ITIMER_REAL, float(req["kill_after_s"]))
    if req["job"] == "locate":
        run_locate(req["out"], req["model"])
    else:
        run_train(req["cache"], int(req.get("epochs", 2)))


def warm_up() -> None:
    """Import what every child needs once (imports start no threads; running code might)."""
    import matplotlib.figure  # noqa: F401
    import pyogrio  # noqa: F401
    import rasterio  # noqa: F401

    import geodiffloc.geo
    import geodiffloc.models.locdiff  # noqa: F401


def serve() -> None:
    warm_up()
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("job") == "quit":
            break
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(req)
            except FileExistsError:  # outputs already complete: the next run refuses
                code = 4
            except BaseException as err:  # reported to the test, never swallowed
                sys.stderr.write(f"child failed: {type(err).__name__}: {err}\n")
                code = 3
            finally:
                os._exit(code)
        if req.get("kill_after_train_dir_s") is not None:
            models = Path(req["cache"]) / "models"
            while not list(models.glob(".train-*")) and time.perf_counter() - t0 < 600:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break
                time.sleep(0.02)
            time.sleep(float(req["kill_after_train_dir_s"]))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = 0
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        print(json.dumps({"killed": killed, "exit": os.WEXITSTATUS(status)
                          if os.WIFEXITED(status) else None,
                          "seconds": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    serve()
