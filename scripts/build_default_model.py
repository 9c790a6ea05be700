"""Build the default place-description geolocator of ``geodiffloc locate``.

Trains exactly the checkpoint that the first ``geodiffloc locate`` trains on demand
(same :data:`~geodiffloc.pipeline.DEFAULT_MODEL_CONFIG`, same seed, same library
training code), writes it to the user cache folder (or ``--out``) and prints the
held-out accuracy::

    python scripts/build_default_model.py                 # into the cache, as locate would
    python scripts/build_default_model.py --out model.safetensors
    python scripts/build_default_model.py --set train.epochs=20 --out exp.safetensors

``--set key.sub=value`` overrides config entries for experiments (the result then has
another hash and is not the default ``locate`` picks up unless written to the cache).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

from geodiffloc.pipeline import DEFAULT_MODEL_CONFIG, default_model_path, train_default_model

THRESHOLDS = (1, 25, 200, 750, 2500)


def _set(cfg: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep:
        raise SystemExit(f"--set needs key=value; got {item!r}")
    *parents, last = key.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    if last not in node:
        raise SystemExit(f"unknown config key {key!r}")
    node[last] = json.loads(raw) if raw[:1] in "[{0123456789-tfn" else raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="checkpoint path (default: the cache path locate uses)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config entry, e.g. train.epochs=20 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)

    cfg = copy.deepcopy(DEFAULT_MODEL_CONFIG)
    for item in args.set:
        _set(cfg, item)
    path = args.out or default_model_path(cfg)
    t0 = time.perf_counter()
    _, manifest = train_default_model(cfg, path=path, overwrite=args.overwrite,
                                      progress=not args.no_progress)
    wall = time.perf_counter() - t0
    m = manifest["metrics"]["held_out"]
    d = manifest["data"]
    print(f"\nwrote {path} (+ {Path(path).with_suffix('.json').name}) in {wall:.0f} s "
          f"(embed {manifest['timings_s']['embed']} s, train {manifest['timings_s']['train']} s)")
    print(f"held-out places: {d['n_test']} ({d['split']} split), trained on {d['n_train']}")
    print(" | ".join(f"acc@{t}km" for t in THRESHOLDS) + " | median km")
    print(" | ".join(f"{m[f'acc@{t}km']:8.1f}%" for t in THRESHOLDS)
          + f" | {m['median_km']:9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
