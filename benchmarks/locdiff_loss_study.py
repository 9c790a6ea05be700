"""Why LocDiff learned slowly, and what fixes it: accuracy against training steps per loss.

The task is :mod:`benchmarks.accuracy`'s (the gazetteer text task, 12 000 training and
300 test places, seed 0, both splits); the baselines (nearest neighbour, 1024-cell
classifier) are trained in the same run on the same data. Every variant is the same
LocDiff (L = 23, CS-UNet widths (512, 256, 128) unless stated) trained with AdamW, a
100-step linear warm-up and a cosine decay over the run, batch 256, gradient clipping 1;
only the loss options change. At each checkpoint the model predicts every test place
with DPM-Solver++ (10 steps), ``K`` samples per place aggregated by the mixture mode
("mode"), and with its first sample alone ("single").

Variants (keys of :data:`VARIANTS`; any LocDiff ``training_loss`` option can be given):

* ``paper``: the paper's single-scale reverse SHDD-KL on 2048 fresh uniform anchors;
* ``ms_*``: multi-scale KL (``kl_scales``), ``fwd``: forward KL, ``*aux*``: plus the
  auxiliary MSE on the scaled ``x0`` (``aux_weight``), ``*bank``: anchors drawn from a
  fixed bank of 16 384 points whose harmonics are computed once.

One worker process per (variant, split); ``--jobs`` of them run at once, ``--device``
trains on a GPU if there is one (evaluation is always on the CPU). Each worker appends
JSON lines to ``--out``; the table is rendered from those lines, so runs made on other
machines render the same way (``--render-only``).

Run: ``python benchmarks/locdiff_loss_study.py --variants paper ms_rev_aux3 --jobs 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
THRESHOLDS = (25, 200, 750, 2500)
KEYS = (*(f"acc@{t}km_%" for t in THRESHOLDS), "median_km")

#: The loss options of each variant (passed to ``LocDiff.training_loss``), plus optional
#: ``bank``, ``lr``, ``widths`` and ``bs``.
VARIANTS: dict[str, dict] = {
    "paper": {},
    "ms_rev": {"kl_scales": [3, 7, 15]},
    "fwd": {"kl_direction": "forward"},
    "ms_fwd": {"kl_direction": "forward", "kl_scales": [3, 7, 15]},
    "ms_rev_aux": {"kl_scales": [3, 7, 15], "aux_weight": 1.0},
    "ms_fwd_bank": {"kl_direction": "forward", "kl_scales": [3, 7, 15], "bank": 16384},
    "ms_rev_bank_lr3": {"kl_scales": [1, 3, 7, 15], "bank": 16384, "lr": 3e-3},
    "rev_aux1_bank": {"kl_scales": [3, 7, 15], "aux_weight": 1.0, "bank": 16384},
    "rev_aux3_bank": {"kl_scales": [3, 7, 15], "aux_weight": 3.0, "bank": 16384},
    "rev_aux10_bank": {"kl_scales": [3, 7, 15], "aux_weight": 10.0, "bank": 16384},
    "rev4_aux3_bank": {"kl_scales": [1, 3, 7, 15], "aux_weight": 3.0, "bank": 16384},
    "rev_aux3_w1024": {"kl_scales": [3, 7, 15], "aux_weight": 3.0, "bank": 16384,
                       "widths": [1024, 512, 256]},
    "rev_aux3_bs512": {"kl_scales": [3, 7, 15], "aux_weight": 3.0, "bank": 16384, "bs": 512},
    "paper_aux3_bank": {"aux_weight": 3.0, "bank": 16384},
}


def haversine_km(pred, truth):
    import numpy as np

    p, t = np.radians(np.asarray(pred, np.float64)), np.radians(np.asarray(truth, np.float64))
    a = (np.sin((t[:, 0] - p[:, 0]) / 2) ** 2
         + np.cos(p[:, 0]) * np.cos(t[:, 0]) * np.sin((t[:, 1] - p[:, 1]) / 2) ** 2)
    return 2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def scores(pred, truth) -> dict:
    from geodiffloc.metrics import summarize_errors

    m = summarize_errors(haversine_km(pred, truth[: len(pred)]), thresholds=THRESHOLDS)
    return {k: round(float(m[k]), 1) for k in KEYS}


def load_task(split: str, n_train: int, n_test: int):
    from geodiffloc.data import text_task

    task = text_task(n_train, n_test, split=split, seed=0, progress=False)
    return (task.train.embeddings.float(), task.train.latlon, task.test.embeddings.float(),
            task.test.latlon.numpy())


def worker(job: dict) -> None:
    """Train one variant on one split and append a JSON line per checkpoint."""
    import numpy as np
    import torch

    from geodiffloc.models.locdiff import AnchorSampler, LocDiff

    torch.set_num_threads(job.get("threads", 1))
    xtr, ytr, xte, yte = load_task(job["split"], job["n_train"], job["n_test"])
    out = open(job["out"], "a")  # appended to until the worker ends

    def emit(rec: dict) -> None:
        rec.update(name=job["name"], split=job["split"])
        out.write(json.dumps(rec) + "\n")
        out.flush()

    if job["name"] == "baselines":
        sys.path.insert(0, str(HERE))
        from baselines import CellClassifier, nearest_neighbour

        emit({"variant": "NN", **scores(nearest_neighbour(xtr, ytr, xte)[0], yte)})
        clf = CellClassifier(1024, epochs=30).fit(xtr, ytr)
        emit({"variant": "cells1024-30ep", **scores(clf.predict(xte, "cell_mean"), yte)})
        return
    v, dev = dict(VARIANTS[job["name"]]), job["device"]
    torch.manual_seed(0)
    model = LocDiff(L=23, cond_dim=xtr.shape[1], widths=v.get("widths")).to(dev)
    anchors = AnchorSampler("uniform", bank=v.get("bank"))
    lr, bs, total = v.get("lr", 1e-3), v.get("bs", 256), max(job["ckpts"])
    opt = torch.optim.AdamW(model.net.parameters(), lr=lr, weight_decay=0.0)
    x, y = xtr.to(dev), ytr.float().to(dev)
    targets = model.shdd.encode(latlon=ytr).float().to(dev)
    g = torch.Generator().manual_seed(0)
    options = {k: v[k] for k in ("kl_scales", "kl_direction", "aux_weight") if k in v}
    step, losses, train_s = 0, [], 0.0
    for ck in job["ckpts"]:
        model.train()
        t0 = time.perf_counter()
        while step < ck:
            warm = min(1.0, (step + 1) / 100)
            for group in opt.param_groups:
                group["lr"] = lr * warm * 0.5 * (1 + np.cos(np.pi * step / total))
            idx = torch.randint(0, x.shape[0], (bs,), generator=g).to(dev)
            loss, _ = model.training_loss(x[idx], y[idx], targets=targets[idx],
                                          anchor_sampler=anchors, generator=g, **options)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.net.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        train_s += time.perf_counter() - t0
        cpu = model.to("cpu").eval()
        t0 = time.perf_counter()
        coeffs, samples = cpu.sample_locations(xte, n_views=job["K"], sampler="dpm++",
                                               steps=10, seed=0)
        mode = cpu.aggregate(coeffs, samples, "mixture_mode").numpy()
        emit({"variant": "mode", "step": step, **scores(mode, yte),
              "loss": round(float(np.mean(losses[-50:])), 4), "train_s": round(train_s, 1),
              "eval_s": round(time.perf_counter() - t0, 1), "K": job["K"]})
        emit({"variant": "single", "step": step, **scores(samples[:, 0].numpy(), yte)})
        model.to(dev)


def render(paths: list[Path], notes: list[str]) -> str:
    """Markdown tables (one per split) from the JSON lines of one or more runs."""
    rows = [json.loads(line) for p in paths for line in p.read_text().splitlines() if line]
    cols = ["acc@25", "acc@200", "acc@750", "acc@2500", "median km"]
    out = ["# LocDiff loss study: accuracy against training steps", "", *notes, ""]
    for split in ("random", "region"):
        sub = [r for r in rows if r["split"] == split]
        if not sub:
            continue
        out += [f"## {split} split", "",
                "| model | aggregation | steps | " + " | ".join(cols) + " | final loss |",
                "|---|---|---|" + "---|" * (len(cols) + 1)]
        for r in sub:
            if r["name"] == "baselines":
                out.append(f"| baseline: {r['variant']} | | | "
                           + " | ".join(str(r[k]) for k in KEYS) + " | |")
        ld = sorted((r for r in sub if r["name"] != "baselines"),
                    key=lambda r: (r["name"], r["variant"], r["step"]))
        for r in ld:
            extra = f"K={r['K']}" if "K" in r else ""
            loss = round(r["loss"], 3) if "loss" in r else ""
            out.append(f"| {r['name']} | {r['variant']} {extra} | {r['step']} | "
                       + " | ".join(str(r[k]) for k in KEYS) + f" | {loss} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=["paper", "rev4_aux3_bank"],
                    choices=sorted(VARIANTS))
    ap.add_argument("--splits", nargs="+", default=["random", "region"])
    ap.add_argument("--ckpts", type=int, nargs="+", default=[1500, 4000])
    ap.add_argument("--K", type=int, default=16, help="samples per test place")
    ap.add_argument("--n-train", type=int, default=12000)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "locdiff_loss_study.jsonl")
    ap.add_argument("--render-only", type=Path, nargs="*", default=None,
                    help="render the table from these JSON-lines files and stop")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    sys.path.insert(0, str(HERE))
    from _record import record

    if args.render_only is not None:
        print(render(args.render_only or [args.out], []))
        return
    jobs = [{"name": n, "split": s, "device": args.device, "ckpts": sorted(args.ckpts),
             "K": args.K, "n_train": args.n_train, "n_test": args.n_test, "out": str(args.out),
             "threads": max(1, (os.cpu_count() or 1) // args.jobs)}
            for s in args.splits for n in ["baselines", *args.variants]]
    running: list[subprocess.Popen] = []
    with record("locdiff_loss_study", "LocDiff loss study"):
        for job in jobs:
            while len(running) >= args.jobs:
                running = [p for p in running if p.poll() is None]
                time.sleep(1)
            running.append(subprocess.Popen([sys.executable, __file__, "--worker",
                                              json.dumps(job)]))
        for p in running:
            p.wait()
        print(render([args.out], [f"Runs appended to `{args.out.name}`."]))


if __name__ == "__main__":
    main()
