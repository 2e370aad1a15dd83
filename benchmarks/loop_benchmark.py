"""Benchmark of the nightly loop on the embedded synthetic data (not a test).

Runs two nights in a fresh temporary RECLOOP_HOME and writes
`benchmarks/results/loop.json` and `benchmarks/results/loop.md`: per architecture the
validation and staging AUC/logloss next to the oracle's, training samples/s, inference
rows/s, preprocessing rows/s, and the wall time of each stage of the flow.

    python -m benchmarks.loop_benchmark [--rows-per-day 20000] [--epochs 4] [--archs wide deep wide_deep]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from benchmarks.report import write_results

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows-per-day", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--archs", nargs="+", default=["wide", "deep", "wide_deep"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="recloop-bench-"))
    os.environ["RECLOOP_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.cli import _quiet_libraries

    _quiet_libraries()
    from feature_store.generators.synthetic import generate_synthetic
    from flows.nightly import nightly_retrain

    start = date(2026, 1, 1)
    t0 = time.perf_counter()
    generate_synthetic(home / "data", start=start, days=args.days, rows_per_day=args.rows_per_day, seed=7)
    generate_seconds = time.perf_counter() - t0
    nights = []
    for run_date in (start + timedelta(days=args.days - 1), start + timedelta(days=args.days)):
        t0 = time.perf_counter()
        summary = nightly_retrain(run_date=run_date, architectures=args.archs, epochs=args.epochs,
                                  approval_mode="auto")
        nights.append({**summary.to_dict(), "wall_seconds": time.perf_counter() - t0})

    result = {
        "benchmark": "nightly loop on synthetic_clicks",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows_per_day": args.rows_per_day,
        "days": args.days,
        "generate_seconds": generate_seconds,
        "nights": nights,
    }
    write_results(args.out, "loop", result, markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [f"# Nightly loop benchmark ({result['rows_per_day']} rows/day, {result['machine']['cpus']} CPUs)", ""]
    for night in result["nights"]:
        o = night.get("oracle_val") or {}
        lines += [f"## Night {night['run_date']} (train {night['data_window']}, staging {night['staging_day']})", "",
                  "| model | val AUC | val logloss | staging AUC | staging logloss | train samples/s | gate |",
                  "|---|---|---|---|---|---|---|"]
        for r in night["rows"]:
            def f(key, spec=".4f", r=r):
                return "" if r.get(key) is None else format(r[key], spec)
            val_auc, val_ll = f("val_auc"), f("val_logloss")
            if r["model"].startswith("oracle") and o:
                val_auc, val_ll = f"{o['auc']:.4f}", f"{o['logloss']:.4f}"
            lines.append(f"| {r['model']} | {val_auc} | {val_ll} | {f('staging_auc')} | {f('staging_logloss')} "
                         f"| {f('train_samples_per_s', ',.0f')} | {r.get('verdict', '')} |")
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in night["stage_seconds"].items())
        lines += ["", f"Stages: {stages}; whole flow {night['wall_seconds']:.1f}s; "
                      f"preprocessing transform {night['preprocess_rows_per_s']:,.0f} rows/s "
                      f"(fit {night['preprocess_fit_seconds']:.1f}s).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
