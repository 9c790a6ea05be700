"""Training throughput through the public training path, and where a step's time goes.

Models, at the sizes users train (the shipped configs):

* LocDiff L = 23 and L = 47 (``configs/locdiff_gazetteer.yaml``: CS-UNet default widths,
  2048 uniform KL anchors, batch 256), trained with :meth:`geodiffloc.LocDiff.fit`;
* GeoCLIP at the CPU size (``configs/geoclip_gazetteer_cpu.yaml``: 256-d embedding, 128
  Fourier frequencies, 256-wide MLPs, queue 1024, batch 256), trained with
  :meth:`geodiffloc.GeoCLIP.fit`.

Both ``fit`` methods run the Lightning modules of :mod:`geodiffloc.train` (the same
optimiser, schedule and loss as ``geodiffloc train``). Data: 384-d random embeddings
(the width of the MiniLM text task) at uniform random places; step time does not
depend on what the embeddings mean.

Printed and written (``benchmarks/results/training.md``, with commit, date, machine,
threads and load in its header):

1. steps/s of ``fit`` in the steady state (after ``--warmup`` steps) and the fixed
   cost of one ``fit`` call (Trainer set-up and tear-down);
2. a per-phase profile of one step, from Lightning hooks inside ``fit``: between steps
   (next batch from the loader, LR scheduler, Lightning's loop bookkeeping), forward +
   loss, backward, and optimiser (clipping, step, zero_grad, end-of-batch logging);
3. the same step as a bare PyTorch loop (no Lightning), split into data (indexing),
   network forward, loss (the rest of the loss: noising, SHDD targets, KL), backward
   and optimiser; its ratio to the Lightning step is the training loop's overhead.

Run: ``python benchmarks/training.py [--steps 40] [--threads 2]`` (a few minutes on a
quiet 2-core machine). Timings taken under load are slower in proportion; compare the
ratios within one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from geodiffloc import GeoCLIP, LocDiff

RESULTS = Path(__file__).resolve().parent / "results" / "training.md"
DIM = 384
BATCH = 256


class PhaseTimer(pl.Callback):
    """Wall-clock marks at the Lightning hooks of every training step."""

    def __init__(self) -> None:
        self.marks: list[dict[str, float]] = []
        self._cur: dict[str, float] = {}
        self._last_end: float | None = None

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, i: int) -> None:
        self._cur = {"start": time.perf_counter(), "prev_end": self._last_end or float("nan")}

    def on_before_backward(self, trainer: Any, module: Any, loss: Any) -> None:
        self._cur["before_backward"] = time.perf_counter()

    def on_after_backward(self, trainer: Any, module: Any) -> None:
        self._cur["after_backward"] = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, module: Any, out: Any, batch: Any,
                           i: int) -> None:
        now = time.perf_counter()
        self._cur["end"] = now
        self._last_end = now
        self.marks.append(self._cur)

    def phases(self, skip: int) -> dict[str, float]:
        """Mean seconds per phase over the steps after the first ``skip``."""
        ms = self.marks[skip + 1:]
        period = (ms[-1]["end"] - ms[0]["prev_end"]) / len(ms)
        data = sum(m["start"] - m["prev_end"] for m in ms) / len(ms)
        fwd = sum(m["before_backward"] - m["start"] for m in ms) / len(ms)
        bwd = sum(m["after_backward"] - m["before_backward"] for m in ms) / len(ms)
        opt = sum(m["end"] - m["after_backward"] for m in ms) / len(ms)
        return {"step": period, "data": data, "forward+loss": fwd, "backward": bwd,
                "optimiser": opt}


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    from geodiffloc.sphere import uniform_random

    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, DIM, generator=g), uniform_random(n, generator=g).double()


def _models() -> dict[str, Any]:
    return {
        "LocDiff L=23": lambda: LocDiff(L=23, cond_dim=DIM),
        "LocDiff L=47": lambda: LocDiff(L=47, cond_dim=DIM),
        "GeoCLIP (CPU config)": lambda: GeoCLIP(
            backbone_dim=DIM, embed_dim=256, n_freqs=128, hidden_dim=256, queue_size=1024,
            cache_dir=False, seed=0),
    }


def through_fit(make: Any, steps: int, warmup: int) -> dict[str, float]:
    """Steps/s and per-phase times of the public ``fit`` (Lightning modules)."""
    model = make()
    emb, ll = _data(4096)
    timer = PhaseTimer()
    t0 = time.perf_counter()
    from geodiffloc.train import fit

    kw: dict[str, Any] = {"optim": {"lr": 1e-3}}
    fit(model, emb, ll, steps=steps, batch_size=BATCH, progress=False, callbacks=[timer], **kw)
    total = time.perf_counter() - t0
    ph = timer.phases(warmup)
    loop = timer.marks[-1]["end"] - timer.marks[0]["start"]
    ph["fixed cost of a fit call"] = total - loop
    ph["steps/s"] = 1.0 / ph["step"]
    return ph


def bare_loop(make: Any, steps: int, warmup: int) -> dict[str, float]:
    """The same step as a plain PyTorch loop, split into phases (no Lightning)."""
    model = make().train()
    emb, ll = _data(4096)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    g = torch.Generator().manual_seed(0)
    is_ld = isinstance(model, LocDiff)
    if is_ld:
        from geodiffloc.models.locdiff import AnchorSampler

        anchors = AnchorSampler("uniform", n_anchors=2048)
    acc = {k: 0.0 for k in ("data", "forward", "loss", "backward", "optimiser")}
    for i in range(steps):
        t0 = time.perf_counter()
        idx = torch.randint(0, emb.shape[0], (BATCH,), generator=g)
        x, y = emb[idx], ll[idx]
        t1 = time.perf_counter()
        if is_ld:
            with torch.no_grad():  # the network alone, on a batch of the same shape
                t = torch.randint(0, model.diffusion.num_train_timesteps, (BATCH,))
                model.net(torch.randn(BATCH, model.dim), t, x)
            t2 = time.perf_counter()
            loss, _ = model.training_loss(x, y, anchor_sampler=anchors, generator=g)
        else:
            with torch.no_grad():
                model.project(x)
                model.location_encoder(torch.cat([y, model.queue.latlon]).float())
            t2 = time.perf_counter()
            loss = model.training_step(x, y, generator=g)
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        t5 = time.perf_counter()
        if i >= warmup:
            acc["data"] += t1 - t0
            acc["forward"] += t2 - t1
            # the forward was run twice (alone, then inside the loss): subtract it once
            acc["loss"] += (t3 - t2) - (t2 - t1)
            acc["backward"] += t4 - t3
            acc["optimiser"] += t5 - t4
    n = steps - warmup
    out = {k: v / n for k, v in acc.items()}
    out["step"] = sum(out.values())
    out["steps/s"] = 1.0 / out["step"]
    return out


def _header(threads: int) -> str:
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], capture_output=True, text=True,
                                  cwd=Path(__file__).parent, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    dirty = " (with uncommitted changes)" if git("status", "--porcelain") else ""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"commit {git('rev-parse', '--short', 'HEAD')}{dirty}, "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} "
            f"({cpu}, {os.cpu_count()} CPUs), torch {torch.__version__}, {threads} torch "
            f"thread(s), load average {load} (1/5/15 min) at the end")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="substring of the model names to run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, make in _models().items():
        if args.only and args.only not in name:
            continue
        steps = max(args.warmup + 3, args.steps // (2 if "47" in name else 1))
        f = through_fit(make, steps, args.warmup)
        b = bare_loop(make, steps, args.warmup)
        rows.append((name, steps, f, b))
        print(f"{name}: fit {f['steps/s']:.2f} steps/s, bare loop {b['steps/s']:.2f} steps/s",
              flush=True)
    ms = lambda v: f"{1000 * v:.1f}"  # noqa: E731
    lines = ["# Training throughput (public training path)", "", _header(args.threads), "",
             f"Batch {BATCH}, {DIM}-d embeddings; steady state after {args.warmup} steps. "
             "`fit` = `LocDiff.fit` / `GeoCLIP.fit` (the Lightning modules of "
             "`geodiffloc.train`); bare loop = the same model step in plain PyTorch.", "",
             "| model | steps | fit steps/s | bare-loop steps/s | fit / bare step time "
             "| fixed cost per fit call (s) |", "|---|---|---|---|---|---|"]
    for name, steps, f, b in rows:
        lines.append(f"| {name} | {steps} | {f['steps/s']:.2f} | {b['steps/s']:.2f} | "
                     f"{f['step'] / b['step']:.2f} | {f['fixed cost of a fit call']:.2f} |")
    lines += ["", "## One step, by phase (ms)", "",
              "Inside `fit` (Lightning hooks): data = everything between two steps (next "
              "batch from the loader, LR scheduler, loop bookkeeping), forward+loss, "
              "backward, optimiser = clipping + step + zero_grad + logging up to the "
              "end-of-batch hook. Bare loop: indexing, the network forward alone, the rest "
              "of the loss, backward, clipping + optimiser step.", "",
              "| model | where | data | forward | loss | forward+loss | backward | optimiser "
              "| step |", "|---|---|---|---|---|---|---|---|---|"]
    for name, _, f, b in rows:
        lines.append(f"| {name} | fit | {ms(f['data'])} | | | {ms(f['forward+loss'])} | "
                     f"{ms(f['backward'])} | {ms(f['optimiser'])} | {ms(f['step'])} |")
        lines.append(f"| {name} | bare loop | {ms(b['data'])} | {ms(b['forward'])} | "
                     f"{ms(b['loss'])} | {ms(b['forward'] + b['loss'])} | "
                     f"{ms(b['backward'])} | {ms(b['optimiser'])} | {ms(b['step'])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
