"""Run the reliability checks and write docs/reliability.md's tables from their results.

Usage::

    python scripts/reliability_report.py [--skip-signals] [--queries 100] [--fuzz-examples 0]

Writes ``docs/reliability_results.json`` (every case with its outcome) and rewrites the
part of ``docs/reliability.md`` between the ``<!-- results -->`` markers. Nothing in
the tables is typed by hand: the battery of bad inputs (tests/reliability/rel_battery.py),
kill -9 at every commit point and at random times of ``locate`` (test_faults.py's
helpers), the hypothesis suites (test_fuzz*.py: every drawn call's outcome), the
signal/concurrency scenarios (test_signals.py, run by pytest) and a load run of
``locate`` with a tiny model (``--queries``, 0 to skip it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests" / "reliability"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(REPO))
DOC = REPO / "docs" / "reliability.md"
RESULTS = REPO / "docs" / "reliability_results.json"
START, END = "<!-- results -->", "<!-- /results -->"


def battery(work: Path) -> list[dict]:
    from rel_battery import run_battery

    return run_battery(work / "battery")


def faults(work: Path) -> list[dict]:
    import test_faults as tf
    from rel_helpers import save_tiny_model

    model = save_tiny_model(work / "tiny.safetensors")
    z = tf.Zygote(work / "zygote-cache")
    try:
        ref_run = z(job="locate", out=str(work / "reference"), model=str(model))
        n_points = tf._count_replaces(model, work / "counted")
        ref = tf._contents(work / "reference")
        plans = [("commit point", {"kill_at_replace": k}) for k in range(1, n_points + 1)]
        rng = random.Random(0)
        plans += [("random time", {"kill_after_s": rng.uniform(0.05, 1.2) * ref_run["seconds"]})
                  for _ in range(5)]
        out = []
        for i, (kind, plan) in enumerate(plans):
            target = work / f"kill-{i}"
            z(job="locate", out=str(target), model=str(model), **plan)
            try:
                ok, detail = True, tf._check_after_kill(z, target, model, ref)
            except AssertionError as err:
                ok, detail = False, str(err)[:200]
            out.append({"fault": f"kill -9 during locate ({kind})", "plan": str(plan),
                        "survived": ok, "detail": detail})
    finally:
        z.close()
    return out


FUZZ_SUITES = ("test_fuzz.py", "test_fuzz_api.py", "test_fuzz_cli.py")


def fuzz(work: Path, examples: int) -> dict:
    """Run the hypothesis suites; every drawn example's outcome, and each test's verdict.

    ``examples`` > 0 explores that many random examples per test (REL_FUZZ_EXAMPLES);
    0 runs the suites as CI does (a few fixed examples each).
    """
    record, xml = work / "fuzz.jsonl", work / "fuzz.xml"
    env = dict(os.environ, PYTHONPATH=str(REPO), REL_FUZZ_RECORD=str(record))
    if examples:
        env["REL_FUZZ_EXAMPLES"] = str(examples)
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    *(str(TESTS / t) for t in FUZZ_SUITES), f"--junitxml={xml}"], env=env,
                   check=False, capture_output=True)
    verdicts = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        verdicts[case.get("name")] = "failed" if failed else "passed"
    draws = [json.loads(line) for line in record.read_text().splitlines()] \
        if record.exists() else []
    for d in draws:
        d["test"] = d["test"].split("::")[-1]
    return {"examples": examples, "verdicts": verdicts, "draws": draws}


def signals(work: Path) -> list[dict]:
    xml = work / "signals.xml"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    str(TESTS / "test_signals.py"), f"--junitxml={xml}"], env=env, check=False,
                   capture_output=True)
    rows = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        rows.append({"fault": case.get("name").removeprefix("test_").replace("_", " "),
                     "plan": "signal sent to a `geodiffloc locate` subprocess",
                     "survived": not failed, "detail": "" if not failed else "failed"})
    return rows


def load(work: Path, n_queries: int) -> dict:
    from rel_helpers import HashWords, save_tiny_model

    from geodiffloc.pipeline import locate

    model = save_tiny_model(work / "load.safetensors")
    queries = [f"place number {i} in region {i % 17}" for i in range(n_queries)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # imports and the model
    t0 = time.perf_counter()
    locate(queries, model=model, encoder=HashWords(), out_dir=work / "load-out",
           resolution=0.5, n_samples=32, sampler="dpm++", steps=10, progress=False)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"queries": n_queries, "resolution": 0.5, "samples": 32, "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak / 1024, 1), "rss_before_mib": round(before / 1024, 1),
            "files": sorted(p.name for p in (work / "load-out").iterdir())}


def render(res: dict) -> str:
    lines = [START, "",
             f"Measured {res['when']} on {res['machine']} (load average {res['load_average']}; "
             "timings on a shared, loaded machine).", "",
             "**Bad inputs**", "",
             "| interface | group | tried | clear error | tracebacks | hangs | silently accepted |",
             "|---|---|---:|---:|---:|---:|---:|"]
    groups: dict[tuple[str, str], Counter] = {}
    for r in res["battery"]:
        groups.setdefault((r["kind"], r["group"]), Counter())[r["outcome"]] += 1
    total = Counter()
    for (kind, group), c in sorted(groups.items()):
        total += c
        lines.append(f"| {kind} | {group} | {sum(c.values())} | {c['clear']} | "
                     f"{c['traceback']} | {c['hang']} | {c['silent']} |")
    lines.append(f"| **all** | | **{sum(total.values())}** | **{total['clear']}** | "
                 f"**{total['traceback']}** | **{total['hang']}** | **{total['silent']}** |")
    fz = res.get("fuzz")
    if fz:
        how = (f"{fz['examples']} random examples per test" if fz["examples"]
               else "the fixed examples CI runs")
        lines += ["", f"**Fuzzed inputs** (hypothesis, {how}; a drawn call must give a "
                  "checked, valid answer or a clear error)", "",
                  "| suite test | drawn | valid answer | clear error | other | verdict |",
                  "|---|---:|---:|---:|---:|---|"]
        per: dict[str, Counter] = {}
        for d in fz["draws"]:
            per.setdefault(d["test"], Counter())[d["outcome"]] += 1
        ftotal: Counter = Counter()
        for name in sorted(set(per) | set(fz["verdicts"])):
            c = per.get(name, Counter())
            ftotal += c
            other = sum(c.values()) - c["silent"] - c["clear"]
            lines.append(f"| {name.removeprefix('test_')} | {sum(c.values())} | "
                         f"{c['silent']} | {c['clear']} | {other} | "
                         f"{fz['verdicts'].get(name, '?')} |")
        n_failed = sum(v == "failed" for v in fz["verdicts"].values())
        lines.append(f"| **all** | **{sum(ftotal.values())}** | **{ftotal['silent']}** | "
                     f"**{ftotal['clear']}** | "
                     f"**{sum(ftotal.values()) - ftotal['silent'] - ftotal['clear']}** | "
                     f"**{len(fz['verdicts']) - n_failed} passed, {n_failed} failed** |")
        lines += ["", "\"Other\" counts draws a test then judged (a traceback is a failure; "
                  "an accepted bad input fails the test's answer checks)."]
    lines += ["", "**Faults injected**", "", "| fault | injected | survived, nothing lost |",
              "|---|---:|---:|"]
    fgroups: dict[str, list[bool]] = {}
    for f in res["faults"]:
        fgroups.setdefault(f["fault"], []).append(f["survived"])
    for name, oks in fgroups.items():
        lines.append(f"| {name} | {len(oks)} | {sum(oks)} |")
    ld = res.get("load")
    if ld:
        lines += ["", "**Load held**", "",
                  "| queries | resolution | samples/query | wall time | peak memory (RSS) |",
                  "|---:|---:|---:|---:|---:|",
                  f"| {ld['queries']} | {ld['resolution']}° | {ld['samples']} | "
                  f"{ld['seconds']} s | {ld['peak_rss_mib']} MiB |"]
    lines += ["", END]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-signals", action="store_true")
    ap.add_argument("--queries", type=int, default=100,
                    help="queries of the load run (default 100: about 2 minutes on 2 "
                    "cores; 0 skips it and keeps no load table)")
    ap.add_argument("--fuzz-examples", type=int, default=0,
                    help="random hypothesis examples per fuzz test (default 0: the fixed "
                    "examples CI runs)")
    ap.add_argument("--load-only", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if a.load_only is not None:
        print(json.dumps(load(a.load_only, a.queries)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["GEODIFFLOC_CACHE_DIR"] = str(work / "cache")
        res = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                          f"{platform.python_version()}",
               "load_average": " / ".join(f"{x:.1f}" for x in os.getloadavg())}
        res["battery"] = battery(work)
        res["fuzz"] = fuzz(work, a.fuzz_examples)
        res["faults"] = faults(work)
        if not a.skip_signals:
            res["faults"] += signals(work)
        if a.queries > 0:
            # a fresh process: its peak memory is the load run's alone
            run = subprocess.run([sys.executable, __file__, "--load-only", str(work),
                                  "--queries", str(a.queries)],
                                 capture_output=True, text=True, check=True,
                                 env=dict(os.environ, PYTHONPATH=str(REPO)))
            res["load"] = json.loads(run.stdout.strip().splitlines()[-1])
    RESULTS.write_text(json.dumps(res, indent=1, default=str))
    doc = DOC.read_text()
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(head + render(res) + tail)
    bad = [r for r in res["battery"] if r["outcome"] != "clear"]
    lost = [f for f in res["faults"] if not f["survived"]]
    fz_failed = [n for n, v in res["fuzz"]["verdicts"].items() if v != "passed"]
    print(f"{len(res['battery'])} bad inputs: {len(bad)} not clear; "
          f"{len(res['fuzz']['draws'])} fuzzed calls, failing tests: {fz_failed or 'none'}; "
          f"{len(res['faults'])} faults: {len(lost)} lost something")
    return 1 if bad or lost or fz_failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
