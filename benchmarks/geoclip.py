"""GeoCLIP retrieval: our cached gallery vs the official package's per-call re-embedding.

For 64 query embeddings against the MP16 100K gallery, times

* the official path: what ``geoclip.GeoCLIP.predict`` does after its CLIP backbone, i.e.
  the image MLP, the location encoder over the whole gallery (every call), cosine
  logits, softmax and top-k, using the official ``geoclip`` modules and weights;
* ours: ``GeoCLIP.predict(features, top_k=5)`` with the gallery embeddings cached in
  memory (steady state), from the disk cache in a fresh model, and cold (first call,
  which embeds the gallery and writes the cache);

and the location-embedding throughput for the 100K points (ours vs official). Both
sides run the same float32 math on the same CPU in the same process. The backbone is
left out on both sides (it is identical and would dominate).

Run: ``python benchmarks/geoclip.py [--queries 64] [--top-k 5] [--points 100000]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

# This script is called geoclip.py: keep its folder off sys.path so that
# ``import geoclip`` finds the official package, not this file.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--points", type=int, default=100_000,
                    help="gallery points used (first N of MP16 100K)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the fast (ours) timings")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import geoclip  # the official package (weights + gallery ship in the wheel)

    from geodiffloc.models.geoclip import Gallery, GeoCLIP, find_official

    files = find_official()
    gallery = Gallery(Gallery.mp16().latlon[: args.points], f"mp16[:{args.points}]")
    gps = gallery.latlon.float()
    feats = torch.randn(args.queries, 768, generator=torch.Generator().manual_seed(0))

    # -- official path ---------------------------------------------------------------------
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        off_loc = geoclip.LocationEncoder().eval()
    off_mlp = torch.nn.Sequential(torch.nn.Linear(768, 768), torch.nn.ReLU(),
                                  torch.nn.Linear(768, 512))
    off_mlp.load_state_dict(torch.load(files["image_head"], weights_only=True))
    off_scale = torch.load(files["logit_scale"], weights_only=True)

    @torch.no_grad()
    def official_predict():
        img = F.normalize(off_mlp(feats), dim=1)
        loc = F.normalize(off_loc(gps), dim=1)  # the whole gallery, every call
        probs = (off_scale.exp() * img @ loc.T).softmax(dim=-1)
        return torch.topk(probs, args.top_k, dim=1)

    t_off, off_top = timed(official_predict)
    with torch.no_grad():
        t_off_loc, _ = timed(lambda: off_loc(gps))

    # -- ours ------------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as cache:
        model = GeoCLIP.from_official(backbone=None, cache_dir=cache)
        t_cold, _ = timed(lambda: model.predict(feats, top_k=args.top_k, gallery=gallery))
        t_warm, ours = timed(lambda: model.predict(feats, top_k=args.top_k, gallery=gallery),
                             args.repeats)
        fresh = GeoCLIP.from_official(backbone=None, cache_dir=cache)
        t_disk, _ = timed(lambda: fresh.predict(feats, top_k=args.top_k, gallery=gallery))
    t_loc, _ = timed(lambda: model.location_encoder.embed(gps))

    agree = (ours.gallery_index.to_numpy().reshape(args.queries, args.top_k)
             == off_top.indices.numpy()).mean()
    n = len(gallery)
    rows = [
        (f"retrieval {args.queries} q, top-{args.top_k}, memory cache", t_off, t_warm),
        (f"retrieval {args.queries} q, top-{args.top_k}, disk cache (fresh model)", t_off, t_disk),
        (f"retrieval {args.queries} q, top-{args.top_k}, cold (embeds + caches)", t_off, t_cold),
        (f"location embeddings, {n} points", t_off_loc, t_loc),
    ]
    print(f"\nGeoCLIP on CPU, {torch.get_num_threads()} threads, gallery {n} points")
    print(f"{'task':<58} {'official s':>11} {'ours s':>9} {'speed-up':>9}")
    for name, base, ours_t in rows:
        print(f"{name:<58} {base:>11.3f} {ours_t:>9.3f} {base / ours_t:>8.1f}x")
    print(f"location embeddings per second: official {n / t_off_loc:,.0f}, ours {n / t_loc:,.0f}")
    print(f"top-{args.top_k} indices identical to the official path: {agree:.1%}")


if __name__ == "__main__":
    main()
