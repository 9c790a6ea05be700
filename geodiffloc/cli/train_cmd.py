"""``geodiffloc train locdiff|geoclip|hierloc|g3 --config cfg.yaml``: train from a config file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._help import examples

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Train LocDiff, GeoCLIP, HierLoc or G3 on precomputed embeddings (a feature store, an .npz of
arrays), on a CSV / photo folder encoded first, or on the offline gazetteer text task,
as described by a YAML config (copy one from configs/ and edit it). Checkpoints of the
best and the last epoch go to OUT/checkpoints, logs to OUT/logs, and the trained model
to OUT/model.safetensors, which loads with LocDiff.load / GeoCLIP.load / HierLoc.load / G3.load.
"""
_EXAMPLES = examples(
    "geodiffloc train locdiff --config configs/locdiff_gazetteer.yaml --out runs/ld",
    "geodiffloc train locdiff --config configs/locdiff_gazetteer.yaml --out runs/ld \\\n"
    "      --resume runs/ld/checkpoints/last.ckpt --max-epochs 20",
    "geodiffloc train hierloc --config configs/hierloc_gazetteer.yaml --accelerator gpu "
    "--devices 2",
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train LocDiff, GeoCLIP, HierLoc or G3 from a YAML config (Lightning: CPU/GPU/DDP)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXAMPLES,
    )
    p.add_argument("family", choices=("locdiff", "geoclip", "hierloc", "g3"), help="model family")
    p.add_argument("--config", "-c", type=Path, required=True, help="YAML training config")
    p.add_argument("--out", "-o", type=Path, default=None,
                   help="output folder (overrides out_dir of the config)")
    p.add_argument("--resume", type=Path, default=None, metavar="CKPT",
                   help="resume from a Lightning checkpoint, e.g. OUT/checkpoints/last.ckpt")
    p.add_argument("--max-epochs", type=int, default=None, help="override trainer.max_epochs")
    p.add_argument("--max-steps", type=int, default=None, help="override trainer.max_steps")
    p.add_argument("--accelerator", default=None,
                   help="override trainer.accelerator (auto, cpu, gpu)")
    p.add_argument("--devices", default=None,
                   help="override trainer.devices (a count such as 2, or 'auto')")
    p.add_argument("--seed", type=int, default=None, help="override the seed")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run's checkpoints and exported model in OUT")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    ov: dict[str, Any] = {}
    trainer: dict[str, Any] = {}
    if args.accelerator is not None:
        trainer["accelerator"] = args.accelerator
    if args.devices is not None:
        trainer["devices"] = _devices(args.devices)
    if args.no_progress:
        trainer["enable_progress_bar"] = False
    if trainer:
        ov["trainer"] = trainer
    if args.seed is not None:
        ov["seed"] = args.seed
    if args.overwrite:
        ov["overwrite"] = True
    return ov


def _devices(text: str) -> int | str | list[int]:
    """``--devices``: a count (``2``), ``auto``, ``-1`` (all) or a list of ids (``0,1``)."""
    t = text.strip()
    if t == "auto" or t == "-1":
        return t if t == "auto" else -1
    if t.isdigit() and int(t) > 0:
        return int(t)
    parts = [p.strip() for p in t.split(",") if p.strip()]
    if len(parts) > 1 and all(p.isdigit() for p in parts):
        return [int(p) for p in parts]
    raise ValueError(f"--devices must be a count > 0, 'auto', -1 or ids such as 0,1; got {text!r}.")


def run(args: argparse.Namespace) -> int:
    """Run ``geodiffloc train``; returns the exit code."""
    import yaml

    from ..train import train

    if not args.config.is_file():
        raise FileNotFoundError(f"config file {args.config} does not exist.")
    try:
        raw = yaml.safe_load(args.config.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{args.config} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{args.config} must hold a mapping of sections (family, data, ...).")
    fam = raw.get("family", args.family)
    if fam != args.family:
        raise ValueError(
            f"{args.config} is a {fam!r} config but the command asked for {args.family!r}; "
            f"run 'geodiffloc train {fam} ...' or change the config's family."
        )
    raw["family"] = args.family
    _, results = train(raw, out_dir=args.out, resume=args.resume, max_epochs=args.max_epochs,
                       max_steps=args.max_steps, overrides=_overrides(args))
    from lightning.pytorch.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        print(f"trained {args.family}: {results['global_step']} steps, "
              f"{results['epoch']} epochs; exported ({results['weights']} weights) to "
              f"{results['model_path']}")
        for k, v in results["metrics"].items():
            print(f"  {k:>18s}  {v:,.3f}")
    return 0
