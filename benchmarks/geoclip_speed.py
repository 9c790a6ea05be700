"""GeoCLIP retrieval: our cached gallery vs the official package's per-call re-embedding.

For 64 query embeddings against the MP16 100K gallery, times

* the official path: what ``geoclip.GeoCLIP.predict`` does after its CLIP backbone, i.e.
  the image MLP, the location encoder over the whole gallery (every call), cosine
  logits, softmax and top-k, using the official ``geoclip`` modules and weights;
* ours: ``GeoCLIP.predict(features, top_k=5)``;

like for like: the same float32 math on the same CPU in the same process, after one
shared torch warm-up, in three states that are the same on both sides:

* steady state: one warm-up call each, then the best of ``--repeats`` calls each (ours
  serves the gallery embeddings from memory; the official path re-embeds every call);
* first call of a fresh model with nothing cached (ours embeds the gallery and writes
  its cache; one call each);
* first call of a fresh model whose gallery is cached on disk (the official package has
  no cache, so its first call is the same as above; one call each);

and the location-embedding throughput for the 100K points (best of ``--repeats`` each).
The backbone is left out on both sides (it is identical and would dominate).

Run: ``python benchmarks/geoclip_speed.py [--queries 64] [--top-k 5] [--points 100000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F
from _record import record


def timed(fn, repeats: int = 1, warmup: int = 0):
    """Best wall time of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
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
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed calls per side in the steady-state rows (best is kept)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with record("geoclip_speed", "GeoCLIP retrieval speed (geoclip_speed.py)"):
        run(args)


def run(args: argparse.Namespace) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import geoclip  # the official package (weights + gallery ship in the wheel)

    from geodiffloc.models.geoclip import Gallery, GeoCLIP, find_official

    files = find_official()
    gallery = Gallery(Gallery.mp16().latlon[: args.points], f"mp16[:{args.points}]")
    gps = gallery.latlon.float()
    feats = torch.randn(args.queries, 768, generator=torch.Generator().manual_seed(0))
    # one shared warm-up, so neither side pays torch's one-time start-up costs
    torch.nn.functional.linear(feats, torch.randn(512, 768)).softmax(-1)

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

    t_off_first, off_top = timed(official_predict)
    t_off_steady, _ = timed(official_predict, args.repeats, warmup=1)
    with torch.no_grad():
        t_off_loc, _ = timed(lambda: off_loc(gps), args.repeats, warmup=1)

    # -- ours ------------------------------------------------------------------------------
    def ours(model):
        return lambda: model.predict(feats, top_k=args.top_k, gallery=gallery)

    with tempfile.TemporaryDirectory() as cache:
        model = GeoCLIP.from_official(backbone=None, cache_dir=cache)
        t_cold, _ = timed(ours(model))
        t_steady, top = timed(ours(model), args.repeats, warmup=1)
        fresh = GeoCLIP.from_official(backbone=None, cache_dir=cache)
        t_disk, _ = timed(ours(fresh))
    t_loc, _ = timed(lambda: model.location_encoder.embed(gps), args.repeats, warmup=1)

    agree = (top.gallery_index.to_numpy().reshape(args.queries, args.top_k)
             == off_top.indices.numpy()).mean()
    n, q, k, r = len(gallery), args.queries, args.top_k, args.repeats
    rows = [
        (f"retrieval, {q} queries, top-{k}", f"steady state (warm-up + best of {r}, each)",
         t_off_steady, t_steady),
        (f"retrieval, {q} queries, top-{k}", "first call, fresh model, nothing cached (1 each)",
         t_off_first, t_cold),
        (f"retrieval, {q} queries, top-{k}",
         "first call, fresh model, gallery cached on disk (1 each)", t_off_first, t_disk),
        (f"location embeddings, {n} points", f"warm-up + best of {r}, each", t_off_loc, t_loc),
    ]
    print(f"GeoCLIP on CPU, {torch.get_num_threads()} torch threads, gallery of {n} MP16 "
          "points; both sides in the same process and state.\n")
    print("| task | state (same on both sides) | official s | ours s | speed-up |")
    print("|---|---|---:|---:|---:|")
    for task, state, base, mine in rows:
        print(f"| {task} | {state} | {base:.3f} | {mine:.3f} | {base / mine:.1f}x |")
    print(f"\nLocation embeddings per second: official {n / t_off_loc:,.0f}, ours "
          f"{n / t_loc:,.0f}. Top-{k} indices identical to the official path: {agree:.1%}.")


if __name__ == "__main__":
    main()
