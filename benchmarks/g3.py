"""G3 on the gazetteer text task: the paper's ablation next to GeoCLIP, LocDiff and baselines.

Task: the gazetteer text-geolocation task of ``benchmarks/accuracy.py`` (GeoNames
places captioned and embedded by the offline all-MiniLM-L6-v2; splits ``random`` and
``region``, the latter holding out whole admin-1 areas). G3's place descriptions are
built offline by reverse geocoding each training place with the same gazetteer
("city, county, state, country, continent") and embedded by the same MiniLM.

Trained here, in the same run, with fixed seeds, through the public ``fit`` methods
(the Lightning modules of ``geodiffloc train``):

* G3 (geo-alignment) at GeoCLIP's CPU size (256-d space, 128 Fourier frequencies,
  256-wide MLPs, 1024-entry GPS queue), loss weights (1, 1, 0); with ``--text-ablation``
  also G3 without the query–text term (the paper's IMG+GPS row);
* GeoCLIP at the same size (``configs/geoclip_gazetteer_cpu.yaml``), retrieval over its
  training places;
* LocDiff L = 23 (default loss), DPM-Solver++ 20 steps, K samples, mixture mode; and
  LocDiff-H (its candidates re-ranked by GeoCLIP over the training places, default
  density rule);
* nearest neighbour in MiniLM space (``benchmarks/baselines.py``).

G3 rows (the paper's ablation; the reference database is the training set):

* ``alignment only``: the location of the most similar reference (top-1 retrieval);
* ``+ diversification, <generator>``: candidates of the generator(s), no verification:
  the generated candidate with the most generated candidates within 100 km (a vote);
* ``+ verification, <generator>``: every candidate (the 20 retrieved references and the
  generated ones) scored by the aligned query–GPS similarity, best kept (full G3);
* ``verification of the references only``: the paper's "w/o diversification";
* ``+ verification x vote, <generator>``: not in the paper: verification times the
  generators' kernel vote (``G3.predict(select="verify_vote")``), a product of experts
  in which a reference far from every generated candidate needs a much higher
  similarity to win.

Generators: ``retrieval`` (kernel modes of the top 5/10/20 references' coordinates, one
"prompt" each) and ``locdiff`` (K samples of the LocDiff above conditioned on the
query); the LMM of the paper is replaced by these offline generators (no network).

Run: ``python benchmarks/g3.py [--quick] [--device cuda] [--splits random region]``.
``--quick`` (small sizes, < 3 min on 2 cores) prints only; a full run writes
``benchmarks/results/g3.md`` through ``benchmarks/_record.py``. Progress and phase
times go to stderr; nothing is interactive.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import accuracy  # noqa: E402  (the gazetteer task's rows, tables and baselines)

RESULTS = HERE / "results" / "g3.md"
log, timed, row = accuracy.log, accuracy.timed, accuracy.row


@dataclass(frozen=True)
class Budget:
    n_train: int = 12000
    n_test: int = 300
    g3_steps: int = 1500         # G3 optimiser steps (batch 256)
    geoclip_steps: int = 1500    # GeoCLIP optimiser steps (batch 256)
    locdiff_steps: int = 3000    # LocDiff L = 23 optimiser steps (batch 256)
    samples: int = 16            # LocDiff samples per query (K), also as G3 candidates
    n_references: int = 20       # references retrieved per query
    k: int = 5                   # candidates per retrieval prompt
    batch: int = 256             # batch size of every fit
    queue: int = 1024            # GPS queue of GeoCLIP and G3
    locdiff_width: int = 0       # 0: LocDiff's default CS-UNet; else one block this wide


DEFAULT = Budget()
# tiny: every model sees a few batches (numbers mean nothing; the run checks the wiring)
QUICK = Budget(n_train=600, n_test=30, g3_steps=30, geoclip_steps=30, locdiff_steps=30,
               samples=4, n_references=20, k=3, batch=64, queue=128, locdiff_width=64)


def train_g3(task: Any, b: Budget, seed: int, device: str, clock: dict[str, float], *,
             loss_weights: tuple[float, float, float] = (1.0, 1.0, 0.0)) -> Any:
    from geodiffloc.encoders.text import SentenceTransformerEncoder
    from geodiffloc.models.g3 import G3, ReferenceDatabase

    enc = SentenceTransformerEncoder()
    m = G3(input_dim=task.dim, text_dim=enc.dim, embed_dim=256, sigmas=(1, 16, 256),
           n_freqs=128, hidden_dim=256, queue_size=b.queue, loss_weights=loss_weights,
           seed=seed)
    m.encoder_record = {"name": task.encoder_name, "dim": task.dim}
    m.set_text_encoder(enc)
    with timed("G3 descriptions (reverse geocoding + MiniLM, cached)", clock):
        text = m.description_embeddings(task.train.latlon)
    m.to(device)
    tag = "" if loss_weights[1] else " without the text term"
    with timed(f"G3 fit{tag} ({b.g3_steps} steps)", clock):
        losses = m.fit(task.train.embeddings.float(), task.train.latlon, text_embeddings=text,
                       steps=b.g3_steps, batch_size=b.batch, lr=1e-3, seed=seed, progress=False)
    k = max(1, len(losses) // 10)
    log(f"  loss first/last 10%: {np.mean(losses[:k]):.3f} / {np.mean(losses[-k:]):.3f}")
    m.set_references(ReferenceDatabase(task.train.embeddings, task.train.latlon,
                                       name="train"))
    return m.eval()


def train_geoclip(task: Any, b: Budget, seed: int, device: str, clock: dict[str, float]) -> Any:
    from geodiffloc.models.geoclip import GeoCLIP

    gc = GeoCLIP(backbone_dim=task.dim, embed_dim=256, sigmas=(1, 16, 256), n_freqs=128,
                 hidden_dim=256, queue_size=b.queue, seed=seed, cache_dir=False).to(device)
    with timed(f"GeoCLIP fit ({b.geoclip_steps} steps)", clock):
        gc.fit(task.train.embeddings.float(), task.train.latlon.float(),
               steps=b.geoclip_steps, batch_size=b.batch, lr=1e-3, seed=seed, progress=False)
    return gc.eval()


def train_locdiff(task: Any, b: Budget, seed: int, device: str, clock: dict[str, float]) -> Any:
    from geodiffloc.models.locdiff import LocDiff

    torch.manual_seed(seed)
    widths = {} if not b.locdiff_width else {"widths": (b.locdiff_width,)}
    ld = LocDiff(L=23, cond_dim=task.dim, encoder={"name": task.encoder_name, "dim": task.dim},
                 **widths).to(device)
    with timed(f"LocDiff L=23 fit ({b.locdiff_steps} steps)", clock):
        ld.fit(task.train.embeddings.float(), task.train.latlon, steps=b.locdiff_steps,
               batch_size=b.batch, lr=1e-3, warmup_steps=min(100, b.locdiff_steps // 10),
               seed=seed, progress=False)
    return ld.eval()


def subset(cand: Any, generators: set[str], retrieved: bool) -> Any:
    """The candidates of some generators (and the references), re-ranked and re-normalised."""
    keep = cand["generator"].isin(generators) & (cand["source"] == "generated")
    if retrieved:
        keep |= cand["source"] == "retrieved"
    out = cand[keep].copy()
    out.attrs = dict(cand.attrs)
    for _, idx in out.groupby("query").groups.items():
        z = out.loc[idx, "logit"].to_numpy()
        p = np.exp(z - z.max())
        out.loc[idx, "prob"] = p / p.sum()
        out.loc[idx, "rank"] = np.argsort(np.argsort(-z, kind="stable"), kind="stable") + 1
    return out


def g3_rows(m: Any, ld: Any, xt: torch.Tensor, yt: np.ndarray, b: Budget, seed: int,
            clock: dict[str, float], label: str = "G3") -> list[Any]:
    from geodiffloc.models.g3 import LocDiffGenerator, RetrievalGenerator

    gens = [RetrievalGenerator(bandwidth_km=100.0, ref_counts=(5, 10, 20))]
    if ld is not None:
        gens.append(LocDiffGenerator(ld, sampler="dpm++", steps=20, seed=seed))
    key = f"{label} retrieval + generation + verification"
    with timed(key, clock):
        cand = m.candidates(xt, generators=gens, n_references=b.n_references, k=b.k)
    secs = clock[key]

    def pick(c: Any, select: str) -> np.ndarray:
        p = m.predict(None, select=select, candidates=c)
        return np.stack([p["lat"].to_numpy(), p["lon"].to_numpy()], 1)

    names = [g.name for g in gens]
    rows = [row(label, "alignment only (top-1 reference)",
                pick(subset(cand, set(), True), "top_reference"), yt, secs)]
    rows.append(row(label, "verification of the references only",
                    pick(subset(cand, set(), True), "verify"), yt, secs))
    combos = [{n} for n in names] + ([set(names)] if len(names) > 1 else [])
    for combo in combos:
        tag = " + ".join(sorted(combo))
        rows.append(row(label, f"+ diversification ({tag}), no verification",
                        pick(subset(cand, combo, True), "consensus"), yt, secs))
    for combo in combos:
        tag = " + ".join(sorted(combo))
        c = subset(cand, combo, True)
        r = row(label, f"+ verification ({tag}): full G3", pick(c, "verify"), yt, secs)
        best = m.predict(None, candidates=c)
        r["note"] = f"best from generator {100 * float((best.source == 'generated').mean()):.0f} %"
        rows.append(r)
    for combo in combos:
        tag = " + ".join(sorted(combo))
        c = subset(cand, combo, True)
        best = m.predict(None, candidates=c, select="verify_vote")
        r = row(label, f"+ verification x vote ({tag})",
                np.stack([best["lat"].to_numpy(), best["lon"].to_numpy()], 1), yt, secs)
        r["note"] = f"best from generator {100 * float((best.source == 'generated').mean()):.0f} %"
        rows.append(r)
    return rows


def run_split(split: str, b: Budget, seed: int, device: str, args: argparse.Namespace,
              ) -> tuple[list[Any], dict[str, float], Any]:
    from geodiffloc.data.gazetteer import text_task
    from geodiffloc.models.geoclip import Gallery
    from geodiffloc.models.locdiff import LocDiffH

    clock: dict[str, float] = {}
    log(f"=== split {split!r} ===")
    with timed(f"text task ({b.n_train} train / {b.n_test} test)", clock):
        task = text_task(b.n_train, b.n_test, split=split, seed=seed, progress=False)
    xt, yt = task.test.embeddings.float(), task.test.latlon.numpy()
    baselines = accuracy.load_baselines()
    with timed("nearest neighbour", clock):
        pred, _ = baselines.nearest_neighbour(task.train.embeddings.float(), task.train.latlon,
                                              xt)
    rows = [row("Nearest neighbour", "cosine, MiniLM space", pred, yt,
                clock["nearest neighbour"])]
    gallery = Gallery.from_source(task.train.latlon.numpy(), name=f"train-{split}")
    gc = train_geoclip(task, b, seed, device, clock)
    rows += accuracy.geoclip_rows(gc, xt, yt, {"training places": gallery}, clock)
    ld = train_locdiff(task, b, seed, device, clock)
    key = f"LocDiff sample ({len(xt)} x {b.samples})"
    with timed(key, clock):
        # (every model moves its inputs to its own device)
        coeffs, samples = ld.sample_locations(xt, n_views=b.samples, sampler="dpm++",
                                              steps=20, seed=seed)
        pred = ld.aggregate(coeffs, samples, how="mixture_mode").cpu().numpy()
    rows.append(row("LocDiff L=23", f"dpm++-20, K={b.samples}, mixture_mode", pred, yt,
                    clock[key]))
    h = LocDiffH(ld, gc, radius_km=200.0, n_candidates=b.samples, gallery=gallery)
    with timed("LocDiff-H", clock):
        gdf = h.predict(xt, xt, geoclip_input_kind="backbone",
                        sampler="dpm++", steps=20, seed=seed)
    rows.append(row("LocDiff-H", "dpm++-20, density rerank, training places",
                    np.stack([gdf.lat, gdf.lon], 1), yt, clock["LocDiff-H"]))
    g3 = train_g3(task, b, seed, device, clock)
    rows += g3_rows(g3, ld, xt, yt, b, seed, clock)
    if args.text_ablation:
        g3_nt = train_g3(task, b, seed, device, clock, loss_weights=(1.0, 0.0, 0.0))
        rows += g3_rows(g3_nt, ld, xt, yt, b, seed, clock, label="G3 without text (IMG+GPS)")
    return rows, clock, task


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (< 3 min), prints only")
    ap.add_argument("--splits", nargs="+", default=["random", "region"],
                    choices=["random", "region"])
    ap.add_argument("--device", default="cpu", help="where models train and sample (cuda)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--text-ablation", action=argparse.BooleanOptionalAction, default=None,
                    help="also train G3 without the query-text term (default: on in full "
                    "runs, off with --quick)")
    ap.add_argument("--out", type=Path, default=None, help=f"record path (default {RESULTS})")
    ap.add_argument("--no-write", action="store_true", help="print only")
    for f in Budget.__dataclass_fields__:
        ap.add_argument(f"--{f.replace('_', '-')}", type=int, default=None,
                        help=f"override the budget's {f}")
    args = ap.parse_args(argv)
    b = QUICK if args.quick else DEFAULT
    b = replace(b, **{k: v for k, v in vars(args).items()
                      if k in Budget.__dataclass_fields__ and v is not None})
    if args.text_ablation is None:
        args.text_ablation = not args.quick
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    t0, load_before = time.perf_counter(), os.getloadavg()
    by_split, clocks, tasks = {}, {}, {}
    for split in args.splits:
        by_split[split], clocks[split], tasks[split] = run_split(split, b, args.seed,
                                                                 args.device, args)
    wall = time.perf_counter() - t0
    out = ["# G3 on the gazetteer text task", "",
           f"{'--quick' if args.quick else 'full'} run, seed {args.seed}, device "
           f"{args.device}, {wall / 60:.1f} min in all.", "",
           "Budget: " + ", ".join(f"{k}={v}" for k, v in asdict(b).items()) + ".", "",
           "Percent of held-out places within d km (WGS84 geodesic). G3 rows share one "
           "candidate set per split (one `s/input` for all). The paper's LMM is replaced by "
           "offline generators; see the module docstring of benchmarks/g3.py."]
    for split, rows in by_split.items():
        t = tasks[split]
        out += ["", f"## Split `{split}` ({len(t.train)} train / {len(t.test)} test places)",
                "", accuracy.split_table(rows)]
        slow = sorted(clocks[split].items(), key=lambda kv: -kv[1])[:6]
        out += ["", "Slowest phases: " + "; ".join(f"{k} {v:.0f} s" for k, v in slow) + "."]
    if len(by_split) > 1:
        out += ["", "## Splits side by side", "", accuracy.comparison_table(by_split)]
    text = "\n".join(out) + "\n"
    print(text)
    if not args.quick and not args.no_write:
        from _record import write_record

        write_record(args.out or RESULTS, text, load_before=load_before,
                     title="G3 on the gazetteer text task")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
