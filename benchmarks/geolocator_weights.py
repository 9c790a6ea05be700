"""How the built-in geolocator weighs place names against its model: a study of the constants.

:class:`~geodiffloc.models.toponymic.ToponymGeolocator` multiplies the gazetteer
readings of a text's names by the model's density (see its module docs). This script
draws the model's samples for every description of both test sets ONCE (exactly as
``locate`` does: same embedding, sampler, seed and batches of 64, through
``geodiffloc.pipeline.models._sample_once``), then re-reads the names under each
variant of :class:`~geodiffloc.models.toponymic.ToponymWeights`, so the variants differ
in nothing else. Baselines in the same run: the model alone (no names) and the names
alone (``model_power = 0``: the model never arbitrates).

Every variant reads names with the same, current toponym index (so "v2 constants" is
the version-2 weighting, not the version-2 geolocator, whose index lacked the region
translations and ward suffixes).

Constants are chosen on the main set (``geolocator_descriptions.csv``); the holdout
set (``geolocator_descriptions_holdout.csv``, written later and by other hands) is
reported beside it and is not used to choose.

Run: ``python benchmarks/geolocator_weights.py [--model PATH] [--name NAME]``; writes
``results/<name>.md`` (default ``geolocator_weights``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from _record import record

# geolocator drops this folder from sys.path when imported, so it comes after _record
G = importlib.import_module("geolocator")

HERE = Path(__file__).resolve().parent
SETS = {"main": HERE / "data" / "geolocator_descriptions.csv",
        "holdout": HERE / "data" / "geolocator_descriptions_holdout.csv"}

#: name -> (ToponymWeights overrides, what it tests). ``None``: the model alone.
VARIANTS: dict[str, tuple[dict | None, str]] = {
    "model alone": (None, "no names read (baseline)"),
    "names alone": ({"model_power": 0.0}, "the model never arbitrates (baseline)"),
    "v2 constants": ({"alias_dominance": 1e18, "model_power": 1.0},
                     "own names always hide foreign names; beta = 1"),
    "alias rule, beta 1": ({"model_power": 1.0}, "foreign names of far larger cities kept"),
    "alias rule, beta 0.7": ({"model_power": 0.7}, ""),
    "alias rule, beta 0.5": ({"model_power": 0.5}, ""),
    "alias rule, beta 0.3": ({"model_power": 0.3}, ""),
    "alias rule, beta 0.15": ({"model_power": 0.15}, ""),
    "beta 0.3, eps 0.05": ({"model_power": 0.3, "epsilon": 0.05}, ""),
    "beta 0.3, background 300": ({"model_power": 0.3, "background": 300.0}, ""),
    "beta 0.3, background 3000": ({"model_power": 0.3, "background": 3000.0}, ""),
}


def draw(model, encoder, texts: list[str], opts: dict, batch: int = 64):
    """Per text: the model's (K, d) coefficients, its own point and confidence, as locate."""
    import torch

    from geodiffloc.pipeline.models import _sample_once

    coeffs, points, conf = [], [], []
    for s in range(0, len(texts), batch):
        part = texts[s:s + batch]
        cond = model.embed_views(part, n_views=1, encoder=encoder)[:, 0]
        kw = {"n_views": int(opts["n_samples"]), "samples_per_view": 1,
              "sampler": opts["sampler"], "steps": opts["steps"], "seed": int(opts["seed"])}
        c, smp = _sample_once(model, cond, kw, progress=False)
        p = model.predictions_from_samples(c, smp, aggregate="mixture_mode")
        coeffs.append(c)
        points.append(p[["lat", "lon"]].to_numpy())
        conf.append(p["confidence"].to_numpy())
    import numpy as np

    return torch.cat(coeffs), np.concatenate(points), np.concatenate(conf)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="LocDiff checkpoint (default: the built-in geolocator)")
    p.add_argument("--name", default="geolocator_weights")
    args = p.parse_args(argv)
    with record(args.name, "Built-in geolocator: weighing names against the model"):
        _study(args)
    return 0


def _study(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from geodiffloc.models.toponymic import (
        DENSITY_RESOLUTION,
        ToponymGeolocator,
        ToponymWeights,
    )

    torch.set_num_threads(2)
    model, encoder = G._resolve(args.model, None, progress=True)
    opts = G.locate_defaults()
    geo = ToponymGeolocator(model, encoder)
    drawn = {}
    t0 = time.perf_counter()
    for key, path in SETS.items():
        df = G.load_descriptions(path)
        texts = df["text"].tolist()
        coeffs, points, conf = draw(model, encoder, texts, opts)
        fields = [geo.model_field(coeffs[i], DENSITY_RESOLUTION) for i in range(len(texts))]
        drawn[key] = (df, texts, fields, points, conf)
    sample_s = time.perf_counter() - t0

    rows = []
    for name, (over, note) in VARIANTS.items():
        row = {"variant": name}
        for key, (df, texts, fields, points, conf) in drawn.items():
            if over is None:
                lat, lon, c = points[:, 0], points[:, 1], conf
            else:
                geo.weights = ToponymWeights(**over)
                ans = [geo.combine(t, fields[i], points[i], float(conf[i]))
                       for i, t in enumerate(texts)]
                lat = np.array([a["lat"] for a in ans])
                lon = np.array([a["lon"] for a in ans])
                c = np.array([a["confidence"] for a in ans])
            res = G.score(df, lat, lon, c)
            o = res["overall"].iloc[0]
            row[f"{key} country_%"] = o["country_%"]
            row[f"{key} acc@25km_%"] = o["acc@25km_%"]
            row[f"{key} acc@750km_%"] = o["acc@750km_%"]
            row[f"{key} ECE"] = round(float(res["ece"]), 3)
        row["note"] = note
        rows.append(row)
        print(f"  {name}: main {row['main country_%']}%, holdout {row['holdout country_%']}%",
              file=sys.stderr, flush=True)

    import pandas as pd

    print(f"Model: {'built-in default' if args.model is None else args.model}; "
          f"sampling {opts} (as `locate`), drawn once per set in {sample_s:.0f} s; "
          f"{len(drawn['main'][0])} main and {len(drawn['holdout'][0])} holdout "
          "descriptions. Constants are chosen on the main set only; every variant reads "
          "names with the same, current toponym index.\n")
    print(G._table(pd.DataFrame(rows)))


if __name__ == "__main__":
    raise SystemExit(main())
