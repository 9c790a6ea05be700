"""The bad-input battery: every case, how it ended, and the rule that judges it.

Each case is a call a user could make (Python API) or a command line (CLI, run
in-process through :func:`geodiffloc.cli.main.main`). Outcomes:

``clear``
    API: an exception of a documented type (ValueError and subclasses, OSError and
    subclasses, MemoryError) raised by geodiffloc's own code (the innermost frame of the
    traceback is in the ``geodiffloc`` package), so its message is ours. CLI: exit
    status 2 and exactly one line on stderr, ``geodiffloc <cmd>: error: ...``.
``silent``
    No error at all: bad input accepted (the worst outcome).
``traceback``
    API: another exception type, or one raised deep inside numpy/torch/GDAL.
    CLI: a Python traceback, or a status other than 2.
``hang``
    Did not end within the per-case limit (``signal.alarm``).

``run_battery()`` returns one record per case; the tests assert on it and
``scripts/reliability_report.py`` turns it into the table of docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import signal
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import geodiffloc

PKG = str(Path(geodiffloc.__file__).resolve().parent)
CLEAR_TYPES = (ValueError, OSError, MemoryError)
CASE_SECONDS = 120


class _Hang(BaseException):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang()


def _record(kind: str, outcome: str, detail: str) -> tuple[str, str]:
    """Append the outcome to ``$REL_FUZZ_RECORD`` (JSON lines) when set; return it as is.

    ``scripts/reliability_report.py`` sets it while running the fuzz suites, so that
    the report counts every drawn example; the test that drew it comes from pytest's
    ``PYTEST_CURRENT_TEST``.
    """
    target = os.environ.get("REL_FUZZ_RECORD")
    if target:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"test": test, "kind": kind, "outcome": outcome,
                                 "detail": detail[:200]}) + "\n")
    return outcome, detail


def judge_api(fn: Callable[[], Any]) -> tuple[str, str]:
    """(outcome, detail) of one API call."""
    return _record("api", *_judge_api(fn))


def _judge_api(fn: Callable[[], Any]) -> tuple[str, str]:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        fn()
    except _Hang:
        return "hang", f"no answer within {CASE_SECONDS} s"
    except Exception as err:  # judged below
        frames = traceback.extract_tb(err.__traceback__)
        inner = frames[-1].filename if frames else ""
        ours = str(Path(inner).resolve()).startswith(PKG)
        msg = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        if isinstance(err, CLEAR_TYPES) and ours:
            return "clear", msg
        return "traceback", f"{msg} (raised in {inner}:{frames[-1].lineno if frames else '?'})"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return "silent", "accepted without an error"


def judge_cli(argv: list[str]) -> tuple[str, str]:
    """(outcome, detail) of one in-process ``geodiffloc ARGV``."""
    return _record("cli", *_judge_cli(argv))


def _judge_cli(argv: list[str]) -> tuple[str, str]:
    from geodiffloc.cli.main import main

    err, out = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse usage errors exit 2 with a usage line
                code = stop.code
            except _Hang:
                return "hang", f"no answer within {CASE_SECONDS} s"
            except Exception as exc:
                return "traceback", f"{type(exc).__name__}: {exc}"[:300]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    if "Traceback" in err.getvalue():
        return "traceback", err.getvalue()[-300:]
    if code == 0:
        return "silent", "exit 0"
    if code == 2 and lines and lines[-1].startswith(("geodiffloc", "usage:")) and (
            len(lines) == 1 or lines[0].startswith("usage:")):
        return "clear", lines[-1][:300]
    return "traceback", f"exit {code}: {' | '.join(lines)[-300:]}"


# -- fixtures of the battery (all tiny, written into a work folder) --------------------

class Evil:
    """Unpickling this runs ``os.system``: a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _files(work: Path) -> dict[str, Path]:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from geodiffloc import SHDD, LocDiff

    work.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}
    torch.manual_seed(0)
    m = LocDiff(L=4, cond_dim=32, widths=(32, 16), time_dim=16,
                encoder={"name": "test:hash-words", "dim": 32})
    f["model"] = work / "tiny.safetensors"
    m.save(f["model"], overwrite=True)
    with safe_open(str(f["model"]), "pt") as h:
        meta, tensors = h.metadata(), {k: h.get_tensor(k) for k in h.keys()}
    cfg = json.loads(meta["config"])

    def variant(name: str, t: dict, config: Any) -> None:
        f[name] = work / f"{name}.safetensors"
        raw = config if isinstance(config, str) else json.dumps(config)
        save_file(t, str(f[name]), metadata={**meta, "config": raw})

    nan = {k: v.clone() for k, v in tensors.items()}
    for v in nan.values():
        v.fill_(float("nan"))
    variant("nan_model", nan, cfg)
    variant("badjson_model", tensors, "{not json")
    variant("missing_key_model", tensors, {k: v for k, v in cfg.items() if k != "L"})
    variant("shape_model", tensors, {**cfg, "widths": [64, 16]})
    variant("huge_model", tensors, {**cfg, "L": 1023, "widths": [65536, 65536, 65536]})
    f["random_bytes"] = work / "random.safetensors"
    f["random_bytes"].write_bytes(np.random.default_rng(0).bytes(4096))
    f["evil_ckpt"] = work / "evil.ckpt"
    f["evil_marker"] = work / "EVIL_RAN"
    with open(f["evil_ckpt"], "wb") as h:
        pickle.dump({"state_dict": Evil(f["evil_marker"])}, h)
    # a field raster, and a truncated copy of it
    f["field"] = work / "field.tif"
    if not f["field"].exists():
        s = SHDD(4)
        s.field(s.encode(lat=[45.0], lon=[5.0])[0], resolution=5.0).geoloc.to_geotiff(
            f["field"])
    f["truncated"] = work / "truncated.tif"
    raw = f["field"].read_bytes()
    f["truncated"].write_bytes(raw[: len(raw) // 3])
    f["a_file"] = work / "a_file.txt"
    f["a_file"].write_text("x")
    f["polys"] = work / "polys.gpkg"
    if not f["polys"].exists():
        import geopandas as gpd
        from shapely.geometry import box

        gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(0, 40, 10, 50)],
                         crs="EPSG:4326").to_file(f["polys"])
    f["evil_yaml"] = work / "evil.yaml"
    f["evil_yaml"].write_text("family: locdiff\nseed: !!python/object/apply:os.system "
                              f"['touch {f['evil_marker']}']\n")
    f["bad_yaml"] = work / "bad.yaml"
    f["bad_yaml"].write_text("family: locdiff\ndata: [unclosed\n")
    # a runnable tiny training config over an .npz of arrays (nothing to embed)
    f["arrays"] = work / "arrays.npz"
    rng = np.random.default_rng(0)
    np.savez(f["arrays"], embeddings=rng.standard_normal((64, 8)).astype(np.float32),
             latlon=np.column_stack([rng.uniform(-80, 80, 64), rng.uniform(-180, 180, 64)]))
    base = (f"family: locdiff\ndata: {{source: arrays, path: {f['arrays']}, batch_size: 16}}\n"
            "model: {L: 3, widths: [16], time_dim: 8}\ntrainer: {max_epochs: 1}\n")
    f["tiny_yaml"] = work / "tiny.yaml"
    f["tiny_yaml"].write_text(base)
    f["absurd_yaml"] = work / "absurd.yaml"
    f["absurd_yaml"].write_text(base.replace("L: 3", "L: 100000"))
    f["escape_yaml"] = work / "escape.yaml"
    f["escape_yaml"].write_text(base + "export: {path: ../../escaped.safetensors}\n")
    return f


def api_cases(f: dict[str, Path]) -> list[tuple[str, str, Callable[[], Any]]]:
    """(group, name, call) of the Python API cases."""
    import geopandas as gpd
    from shapely.geometry import LineString, Point, box

    from geodiffloc import SHDD, GeoCLIP, LocDiff
    from geodiffloc.geo import to_geotiff, zonal_probability
    from geodiffloc.sphere import LatLonGrid, fibonacci_lattice

    s = SHDD(4)
    d = s.dim
    nan, inf, big = (torch.full((1, d), v) for v in (float("nan"), float("inf"), 1e30))
    good = s.encode(lat=[10.0], lon=[20.0])
    field = s.field(good[0], resolution=5.0)
    polys = gpd.GeoDataFrame({"n": ["a"]}, geometry=[box(0, 0, 10, 10)], crs="EPSG:4326")
    model = LocDiff.load(f["model"])
    cond = torch.randn(2, 32)
    fast = {"sampler": "ddim", "steps": 2, "n_views": 2}
    gc = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=16, seed=0,
                 cache_dir=False)
    tmp = f["model"].parent
    cases: list[tuple[str, str, Callable[[], Any]]] = []

    def add(group: str, name: str, fn: Callable[[], Any]) -> None:
        cases.append((group, name, fn))

    for label, c in (("NaN", nan), ("inf", inf), ("1e30", big)):
        add("shdd", f"decode({label} vector)", lambda c=c: s.decode(c))
        add("shdd", f"field({label} vector)", lambda c=c: s.field(c[0], resolution=10.0))
        add("shdd", f"kl({label} vector)", lambda c=c: s.kl(c, lat=[0.0], lon=[0.0]))
        add("shdd", f"log_density({label} vector)",
            lambda c=c: s.log_density(c, lat=[0.0], lon=[0.0]))
    add("shdd", "decode(wrong L)", lambda: s.decode(torch.zeros(1, d + 1)))
    add("shdd", "decode(strings)", lambda: s.decode(np.array([["a"] * d])))
    add("shdd", "decode(complex)", lambda: s.decode(torch.zeros(1, d, dtype=torch.complex64)))
    add("shdd", "decode(empty list)", lambda: s.decode([]))
    add("shdd", "kl(0 anchors)", lambda: s.kl(good, lat=[0.0], lon=[0.0],
                                              anchors=torch.zeros(0, 2)))
    add("shdd", "kl(anchor at lat 100)", lambda: s.kl(good, lat=[0.0], lon=[0.0],
                                                      anchors=torch.tensor([[100.0, 0.0]])))
    add("shdd", "kl(NaN anchor)", lambda: s.kl(good, lat=[0.0], lon=[0.0],
                                               anchors=torch.tensor([[float("nan"), 0.0]])))
    add("shdd", "kl(n_anchors=-5)", lambda: s.kl(good, lat=[0.0], lon=[0.0], n_anchors=-5))
    add("shdd", "kl(n_anchors=2.5)", lambda: s.kl(good, lat=[0.0], lon=[0.0], n_anchors=2.5))
    for res in (0, -1.0, float("nan"), 0.001):
        add("shdd", f"field(resolution={res})", lambda r=res: s.field(good[0], resolution=r))
    add("shdd", "field(bbox west == east)",
        lambda: s.field(good[0], resolution=1.0, bbox=(10, 0, 10, 20)))
    add("sphere", "LatLonGrid.global_(0)", lambda: LatLonGrid.global_(0))
    add("sphere", "LatLonGrid.global_(0.001).latlon()",
        lambda: LatLonGrid.global_(0.001).latlon())
    add("sphere", "fibonacci_lattice(10**12)", lambda: fibonacci_lattice(10**12))
    add("sphere", "fibonacci_lattice(2.5)", lambda: fibonacci_lattice(2.5))
    add("sphere", "fibonacci_lattice(-1)", lambda: fibonacci_lattice(-1))
    for kw in ({"confidence_km": -1}, {"confidence_km": float("nan")}, {"steps": 1.5},
               {"steps": 0}, {"guidance_scale": float("nan")}, {"n_views": 0}):
        add("models", f"LocDiff.predict({kw})", lambda kw=kw: model.predict(
            cond, **{**fast, **kw}))
    add("models", "LocDiff.predict(NaN embeddings)",
        lambda: model.predict(torch.full((1, 32), float("nan")), **fast))
    add("models", "LocDiff.predict(1e30 embeddings)",
        lambda: model.predict(torch.full((1, 32), 1e30), **fast))
    add("models", "LocDiff.predict(wrong width)", lambda: model.predict(torch.zeros(1, 7),
                                                                        **fast))
    for key in ("nan_model", "badjson_model", "missing_key_model", "shape_model", "huge_model",
                "random_bytes"):
        add("models", f"LocDiff.load({key})", lambda key=key: LocDiff.load(f[key]))
    add("models", "LocDiff.load(missing file)", lambda: LocDiff.load(tmp / "nope.safetensors"))
    add("models", "GeoCLIP.predict(top_k='2')",
        lambda: gc.predict(torch.randn(1, 8), top_k="2", gallery="fibonacci:50"))
    add("models", "GeoCLIP.predict(top_k=0)",
        lambda: gc.predict(torch.randn(1, 8), top_k=0, gallery="fibonacci:50"))
    neg = field.copy(data=-field.values)
    pos_inf = field.copy(data=np.where(field.values > 0, np.inf, field.values))
    add("geo", "zonal(negative field)", lambda: zonal_probability(neg, polys))
    add("geo", "zonal(field with +inf)", lambda: zonal_probability(pos_inf, polys))
    add("geo", "zonal(field x 3, not normalised)",
        lambda: zonal_probability(field.copy(data=3 * field.values), polys))
    add("geo", "zonal(points as zones)", lambda: zonal_probability(field, gpd.GeoDataFrame(
        geometry=[Point(1, 1)], crs="EPSG:4326")))
    add("geo", "zonal(lines as zones)", lambda: zonal_probability(field, gpd.GeoDataFrame(
        geometry=[LineString([(0, 0), (5, 5)])], crs="EPSG:4326")))
    # zonal(supersample=100000) is no case any more: coverage is exact (exactextract) and
    # the deprecated argument is ignored with a DeprecationWarning, so nothing is allocated
    add("geo", "to_geotiff(complex values)", lambda: to_geotiff(
        field.copy(data=field.values.astype(np.complex64)), tmp / "c.tif", overwrite=True))
    add("geo", "to_geotiff(string values)", lambda: to_geotiff(
        field.copy(data=np.full(field.shape, "a", dtype=object)), tmp / "s.tif",
        overwrite=True))
    add("geo", "to_geotiff(into a missing folder)",
        lambda: to_geotiff(field, tmp / "missing" / "x.tif"))
    return cases


def cli_cases(f: dict[str, Path], work: Path) -> list[tuple[str, str, list[str]]]:
    """(group, name, argv) of the CLI cases; none of them trains or downloads anything."""
    out = str(work / "out")
    m = ["--model", str(f["model"]), "--no-progress", "--samples", "2", "--sampler", "ddim",
         "--steps", "2", "--resolution", "10"]
    c: list[tuple[str, str, list[str]]] = []
    loc = ["locate", "Kyoto temple", "-o"]
    c.append(("locate", "non-UTF-8 query", ["locate", "Caf\udce9", "-o", out, *m]))
    c.append(("locate", "output is a file", [*loc, str(f["a_file"]), *m]))
    c.append(("locate", "output under a file", [*loc, str(f["a_file"] / "sub"), *m]))
    for res in ("0", "-1", "nan", "7", "0.001"):
        c.append(("locate", f"--resolution {res}", [*loc, out, *m, "--resolution", res]))
    c.append(("locate", "--samples 0", [*loc, out, *m, "--samples", "0"]))
    c.append(("locate", "--steps 0", [*loc, out, *m, "--steps", "0"]))
    c.append(("locate", "--steps abc", [*loc, out, *m, "--steps", "abc"]))
    for key in ("nan_model", "badjson_model", "missing_key_model", "shape_model", "huge_model",
                "random_bytes"):
        c.append(("locate", f"--model {key}", [*loc, out, *m, "--model", str(f[key])]))
    c.append(("locate", "--model missing", [*loc, out, *m, "--model", str(work / "no.st")]))
    c.append(("locate", "empty query", ["locate", "  ", "-o", out, *m]))
    c.append(("zonal", "truncated raster", ["zonal", str(f["truncated"]), str(f["polys"]),
                                            "-o", str(work / "z.csv"), "--overwrite"]))
    c.append(("zonal", "missing polygons", ["zonal", str(f["field"]), str(work / "no.gpkg"),
                                            "-o", str(work / "z.csv")]))
    c.append(("zonal", "output is a folder", ["zonal", str(f["field"]), str(f["polys"]),
                                              "-o", str(work)]))
    c.append(("zonal", "output under a file", ["zonal", str(f["field"]), str(f["polys"]),
                                               "-o", str(f["a_file"] / "z.csv")]))
    c.append(("regions", "truncated raster", ["regions", str(f["truncated"]), "-o",
                                              str(work / "r.gpkg")]))
    c.append(("regions", "--levels 1.5", ["regions", str(f["field"]), "--levels", "1.5", "-o",
                                          str(work / "r2.gpkg")]))
    c.append(("regions", "raster is not a raster", ["regions", str(f["a_file"]), "-o",
                                                    str(work / "r3.gpkg")]))
    c.append(("train", "missing config", ["train", "locdiff", "-c", str(work / "no.yaml")]))
    c.append(("train", "invalid YAML", ["train", "locdiff", "-c", str(f["bad_yaml"])]))
    c.append(("train", "YAML with a python tag", ["train", "locdiff", "-c",
                                                  str(f["evil_yaml"])]))
    c.append(("train", "absurd L", ["train", "locdiff", "-c", str(f["absurd_yaml"]), "-o",
                                    str(work / "t1")]))
    c.append(("train", "export path escaping out_dir", ["train", "locdiff", "-c",
                                                        str(f["escape_yaml"]), "-o",
                                                        str(work / "t0")]))
    c.append(("train", "--devices abc", ["train", "locdiff", "-c", str(f["tiny_yaml"]),
                                         "--devices", "abc", "-o", str(work / "t2")]))
    c.append(("train", "--resume random bytes", ["train", "locdiff", "-c",
                                                 str(f["tiny_yaml"]), "--resume",
                                                 str(f["random_bytes"]), "-o",
                                                 str(work / "t3")]))
    c.append(("train", "--resume malicious pickle", ["train", "locdiff", "-c",
                                                     str(f["tiny_yaml"]), "--resume",
                                                     str(f["evil_ckpt"]), "-o",
                                                     str(work / "t4")]))
    return c


def run_battery(work: Path) -> list[dict[str, str]]:
    """Run every case; one record ``{kind, group, case, outcome, detail}`` per case."""
    f = _files(work)
    records = []
    for group, name, fn in api_cases(f):
        outcome, detail = judge_api(fn)
        records.append({"kind": "api", "group": group, "case": name, "outcome": outcome,
                        "detail": detail})
    for group, name, argv in cli_cases(f, work):
        outcome, detail = judge_cli(argv)
        records.append({"kind": "cli", "group": group, "case": name, "outcome": outcome,
                        "detail": detail})
    records.append({"kind": "untrusted", "group": "pickle", "case": "malicious code ran",
                    "outcome": "traceback" if f["evil_marker"].exists() else "clear",
                    "detail": "the evil pickle/yaml never executed"
                    if not f["evil_marker"].exists() else "EVIL CODE RAN"})
    return records
