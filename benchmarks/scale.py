"""Scale benchmark: one night of the loop at growing data sizes, and Criteo at full size (not a test).

For each rows-per-day size: generate 9 days of the synthetic log (`recloop generate`) in a fresh
temporary RECLOOP_HOME, then run one night (`recloop run --date <day 10> --arch wide_deep
--epochs 1 --json ...`, staging day 9, training days 2..8) as a subprocess while sampling the
peak resident memory of its whole process tree (psutil, every 0.25 s; Dask workers started by
the night are its children). Recorded: wall time and rows/s of every stage (the summary's
stage_seconds over the rows the stage handles), the peak tree RSS, the staging AUC of
wide_deep next to the oracle's (true CTR), and the load average (the machine may be shared).

--dask-external: a `dask scheduler` and two `dask worker`s on 127.0.0.1 are started by this
benchmark, each night gets RECLOOP_DASK_ADDRESS=tcp://127.0.0.1:<port> (a night that does not
read it yet runs as before), and their memory is added to the night's peak.

--criteo-rows N (default 0: skipped; 20000000 for the full run): write a Criteo-format TSV of N
lines (feature_store.datasets.criteo.write_criteo_like), import it with `recloop datasets
import-criteo --days 8` (wall time, lines/s, peak RSS), then run one night whose window is the
whole file (7 training days + the staging day). --criteo-import-only stops after the import.

    python -m benchmarks.scale [--sizes 20000,200000,1000000,10000000] [--dask-external SIZES]
                               [--ddp SIZES] [--criteo-rows N] [--criteo-import-only] [--merge]

--ddp SIZES: those sizes once more with the training in 2 DDP processes (RECLOOP_TRAIN_PROCESSES=2).

--merge keeps the runs already in scale.json (a new run replaces the one it repeats), so the
sizes can be measured in several sittings.

Writes benchmarks/results/scale.{json,md,png}. The 10M-rows-a-day night and a 20M-line Criteo
night take long: run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.proctree import wait_sampled
from benchmarks.report import write_results

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
START = date(2026, 1, 1)
DAYS = 9  # the night of day 10 stages on day 9 and trains on days 2..8 (window 7)
CRITEO_START = date(2014, 5, 1)
CRITEO_DAYS = 8  # 7 training days + the staging day: the night's window is the whole file
ARCH = "wide_deep"
RUN_TIMEOUT_S = 6 * 3600


def _env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "RECLOOP_HOME": str(home), "RECLOOP_SETTINGS_FILE": str(home / "absent.env"),
           "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for var in ("RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI", "RECLOOP_DATA_ROOT", "RECLOOP_FAULT",
                "RECLOOP_APPROVAL_MODE", "RECLOOP_DASK_ADDRESS"):
        env.pop(var, None)
    return {**env, **(extra or {})}


def _cli(argv: list[str], env: dict[str, str], log: Path, also: list[int] = ()) -> dict:
    """Run `python -m flows.cli ...`, output to `log`; exit status, wall seconds, peak tree MiB."""
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *argv], env=env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            code, seconds, peak = wait_sampled(proc, also=list(also))
        except BaseException:
            proc.kill()
            raise
    result = {"command": "recloop " + " ".join(argv), "exit_code": code, "seconds": seconds, "peak_rss_mb": peak}
    if code != 0:
        result["tail"] = log.read_text()[-2000:]
    return result


def _day_rows(data_root: Path, dataset: str) -> dict[str, int]:
    """Rows of every day partition, from the parquet footers (nothing read)."""
    rows = {}
    for day in sorted((data_root / dataset).glob("day=*")):
        rows[day.name[4:]] = sum(pq.ParquetFile(f).metadata.num_rows for f in day.glob("*.parquet"))
    return rows


def _stage_rows(summary: dict, day_rows: dict[str, int], epochs: int) -> dict[str, int]:
    """Rows each stage handles: ingest/validate/preprocess the window and the staging day,
    train the fit days (all training days but the last, the validation day) per epoch,
    staging the staging day."""
    first, last = summary["data_window"].split("..")
    window = [d for d in day_rows if first <= d <= last]
    staging = day_rows.get(summary["staging_day"], 0)
    all_rows = sum(day_rows[d] for d in window) + staging
    fit = sum(day_rows[d] for d in window[:-1])
    return {"ingest": all_rows, "validate": all_rows, "preprocess": all_rows, "train": fit * epochs,
            "staging": staging, "promotion": 0, "approval": 0}


def _night(summary_file: Path, day_rows: dict[str, int], epochs: int) -> dict:
    """What a night's --json summary says: stage seconds and rows/s, staging AUC and the oracle's."""
    summary = json.loads(summary_file.read_text())
    rows = _stage_rows(summary, day_rows, epochs)
    stages = {stage: {"seconds": secs, "rows": rows.get(stage, 0),
                      "rows_per_s": rows.get(stage, 0) / secs if secs > 0 and rows.get(stage) else None}
              for stage, secs in summary.get("stage_seconds", {}).items()}
    by_model = {r["model"]: r for r in summary.get("rows", [])}
    oracle = next((r for name, r in by_model.items() if name.startswith("oracle")), None)
    model = by_model.get(ARCH, {})
    return {
        "data_window": summary.get("data_window"), "staging_day": summary.get("staging_day"),
        "window_rows": rows["ingest"], "fit_rows": rows["train"] // max(epochs, 1), "staging_rows": rows["staging"],
        "stages": stages,
        "staging_auc": model.get("staging_auc"), "staging_logloss": model.get("staging_logloss"),
        "oracle_staging_auc": oracle.get("staging_auc") if oracle else None,
        "train_samples_per_s": model.get("train_samples_per_s"),
        "verdict": model.get("verdict"), "promoted": summary.get("promoted"),
        "extra": {k: summary[k] for k in ("preprocess_rows_per_s", "preprocess_fit_seconds") if k in summary},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def external_dask(logs: Path, workers: int = 2, memory_limit: str = "3GiB"):
    """A scheduler and `workers` single-process workers on 127.0.0.1, stopped on exit:
    yields (address, pids). Started here, so their memory is sampled next to the night's."""
    from feature_store.cluster import process_cluster

    return process_cluster(logs, workers=workers, threads=1, memory_limit=memory_limit)


def synthetic_size(rows_per_day: int, base: Path, epochs: int, dask: tuple[str, list[int]] | None,
                   processes: int = 1) -> dict:
    home = base / f"synthetic-{rows_per_day}-{processes}p"
    home.mkdir(parents=True)
    extra = {"RECLOOP_DASK_ADDRESS": dask[0]} if dask else {}
    if processes > 1:
        extra["RECLOOP_TRAIN_PROCESSES"] = str(processes)
    env = _env(home, extra)
    load_before = os.getloadavg()
    generate = _cli(["generate", "--days", str(DAYS), "--rows-per-day", str(rows_per_day)], env, home / "generate.log")
    generate["rows_per_s"] = rows_per_day * DAYS / generate["seconds"]
    result = {"dataset": "synthetic_clicks", "rows_per_day": rows_per_day, "days": DAYS, "generate": generate,
              "dask_external": dask is not None, "train_processes": processes}
    if generate["exit_code"] != 0:
        return result
    day_rows = _day_rows(home / "data", "synthetic_clicks")
    run_date = START + timedelta(days=DAYS)
    result.update(_run_night(home, env, ["--date", str(run_date)], day_rows, epochs, dask))
    result["loadavg_before"], result["loadavg_after"] = load_before, os.getloadavg()
    return result


def _run_night(home: Path, env: dict[str, str], date_args: list[str], day_rows: dict[str, int], epochs: int,
               dask: tuple[str, list[int]] | None) -> dict:
    summary_file = home / "night.json"
    run = _cli(["run", *date_args, "--arch", ARCH, "--epochs", str(epochs), "--json", str(summary_file)],
               env, home / "night.log", also=dask[1] if dask else [])
    out = {"night": run}
    if run["exit_code"] == 0 and summary_file.exists():
        out["night"].update(_night(summary_file, day_rows, epochs))
        out["night"]["rows_per_s"] = out["night"]["window_rows"] / run["seconds"]
    return out


def criteo(lines: int, base: Path, epochs: int, dask: tuple[str, list[int]] | None, import_only: bool) -> dict:
    from feature_store.datasets.criteo import write_criteo_like

    home = base / "criteo"
    home.mkdir(parents=True)
    env = _env(home, {"RECLOOP_DASK_ADDRESS": dask[0]} if dask else {})
    tsv = home / "train.txt"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    write_criteo_like(tsv, lines, seed=0)
    write_seconds = time.perf_counter() - t0
    result = {"dataset": "criteo", "lines": lines, "file_bytes": tsv.stat().st_size,
              "write": {"seconds": write_seconds, "lines_per_s": lines / write_seconds},
              "dask_external": dask is not None, "import_only": import_only,
              "train_settings": {k: v for k, v in env.items() if k.startswith("RECLOOP_TRAIN_")}}
    imported = _cli(["datasets", "import-criteo", str(tsv), "--start-day", str(CRITEO_START),
                     "--days", str(CRITEO_DAYS)], env, home / "import.log")
    imported["lines_per_s"] = lines / imported["seconds"]
    result["import"] = imported
    tsv.unlink()  # gigabytes; the partitions are what the night reads
    if imported["exit_code"] == 0:
        data = home / "data"
        day_rows = _day_rows(data, "criteo")
        result["import"]["days"] = day_rows
        result["import"]["files_per_day"] = {d.name[4:]: len(list(d.glob("*.parquet")))
                                             for d in sorted((data / "criteo").glob("day=*"))}
        if not import_only:
            run_date = CRITEO_START + timedelta(days=CRITEO_DAYS)
            result.update(_run_night(home, env, ["--date", str(run_date), "--dataset", "criteo"], day_rows,
                                     epochs, dask))
    result["loadavg_before"], result["loadavg_after"] = load_before, os.getloadavg()
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20000,200000,1000000,10000000",
                    help="Rows per day, comma-separated; empty: none.")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dask-external", default="", metavar="SIZES",
                    help="Rows-per-day sizes to run once more on an external Dask cluster (a scheduler and two "
                         "worker processes this benchmark starts), e.g. 1000000; empty: none.")
    ap.add_argument("--ddp", default="", metavar="SIZES",
                    help="Rows-per-day sizes to run once more with training in 2 DDP processes "
                         "(RECLOOP_TRAIN_PROCESSES=2), e.g. 10000000; empty: none.")
    ap.add_argument("--criteo-rows", type=int, default=0, help="Lines of the Criteo-format file (0: skip).")
    ap.add_argument("--criteo-import-only", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="Keep the temporary homes (logs, data).")
    ap.add_argument("--merge", action="store_true",
                    help="Keep the runs already in the results file; a new run replaces the one it repeats.")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    external_sizes = [int(s) for s in args.dask_external.split(",") if s.strip()]
    ddp_sizes = [int(s) for s in args.ddp.split(",") if s.strip()]

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.local_prefect import prefect_api

    base = Path(tempfile.mkdtemp(prefix="recloop-scale-"))
    os.environ["PREFECT_HOME"] = str(base / "prefect")
    runs: list[dict] = []
    result = {
        "benchmark": "one night at growing data sizes",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "memory_gb": round(_total_memory() / 2**30, 1)},
        "arch": ARCH, "epochs": args.epochs, "dask_external_sizes": external_sizes,
        "runs": runs,
    }

    if args.merge and (args.out / "scale.json").exists():
        runs.extend(json.loads((args.out / "scale.json").read_text()).get("runs", []))

    def add(run: dict) -> None:  # written after every run: a long benchmark stopped early keeps what it measured
        runs[:] = [r for r in runs if _key(r) != _key(run)]
        runs.append(run)
        runs.sort(key=_key)
        write_results(args.out, "scale", result, markdown(result))

    try:
        # One Prefect server for all nights, outside the sampled trees (it is not the night's memory).
        with prefect_api(base / "logs", echo=print) as api:
            os.environ["PREFECT_API_URL"] = api
            for rows_per_day in sizes:
                print(f"synthetic_clicks: {rows_per_day:,} rows/day", flush=True)
                add(synthetic_size(rows_per_day, base, args.epochs, None))
            for rows_per_day in ddp_sizes:
                print(f"synthetic_clicks: {rows_per_day:,} rows/day, training in 2 DDP processes", flush=True)
                add(synthetic_size(rows_per_day, base / "ddp", args.epochs, None, processes=2))
            if external_sizes:
                with external_dask(base / "dask-external") as dask:
                    for rows_per_day in external_sizes:
                        print(f"synthetic_clicks: {rows_per_day:,} rows/day on an external Dask cluster", flush=True)
                        add(synthetic_size(rows_per_day, base / "external", args.epochs, dask))
            if args.criteo_rows:
                print(f"criteo: {args.criteo_rows:,} lines", flush=True)
                add(criteo(args.criteo_rows, base, args.epochs, None, args.criteo_import_only))
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    write_results(args.out, "scale", result, markdown(result))
    plot(result, args.out / "scale.png")
    return result


def _key(run: dict) -> tuple:
    """What a run measures: the same key means a repeat (see --merge); also the table's order."""
    return (run["dataset"] != "synthetic_clicks", bool(run.get("dask_external")), run.get("rows_per_day") or 0,
            run.get("train_processes") or 1, run.get("lines") or 0, bool(run.get("import_only")))


def _total_memory() -> int:
    import psutil

    return psutil.virtual_memory().total


def _f(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Scale benchmark ({result['arch']}, {result['epochs']} epoch, {m['cpus']} CPUs, {m['memory_gb']} GB)", "",
             "Peak RSS: summed over the command's process tree (and the external Dask processes), sampled every "
             "0.25 s. Load average: 1-minute, before the size's generation and after its night.", "",
             "## Nights", "",
             "| data | Dask | training processes | rows/day | window rows | night wall s | rows/s | peak RSS MB "
             "| staging AUC | oracle AUC | exit | load before / after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if "night" not in r:  # an import only: in the Data table
            continue
        n = r["night"]
        per_day = r.get("rows_per_day") or (r["lines"] // CRITEO_DAYS)
        cluster = "external (2 workers)" if r.get("dask_external") else "local"
        lines.append(f"| {r['dataset']} | {cluster} | {r.get('train_processes') or 1} | {per_day:,} "
                     f"| {_f(n.get('window_rows'), ',')} | {_f(n.get('seconds'), '.1f')} "
                     f"| {_f(n.get('rows_per_s'), ',.0f')} | {_f(n.get('peak_rss_mb'), ',.0f')} "
                     f"| {_f(n.get('staging_auc'), '.4f')} | {_f(n.get('oracle_staging_auc'), '.4f')} "
                     f"| {n.get('exit_code', '')} | {r['loadavg_before'][0]:.2f} / {r['loadavg_after'][0]:.2f} |")
    for r in result["runs"]:
        if r.get("train_settings") and "night" in r:
            settings = ", ".join(f"{k}={v}" for k, v in sorted(r["train_settings"].items()))
            lines += ["", f"The {r['dataset']} night ran with {settings}."]
    lines += ["", "## Stages (seconds, rows/s)", "",
              "| data | rows/day | training processes | ingest | validate | preprocess | train | staging | promotion |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if "night" not in r:
            continue
        stages = r["night"].get("stages", {})
        cells = []
        for stage in ("ingest", "validate", "preprocess", "train", "staging", "promotion"):
            s = stages.get(stage)
            cells.append("" if s is None else f"{s['seconds']:.1f} s" + (f" ({s['rows_per_s']:,.0f}/s)" if s["rows_per_s"] else ""))
        per_day = r.get("rows_per_day") or (r["lines"] // CRITEO_DAYS)
        lines.append(f"| {r['dataset']} | {per_day:,} | {r.get('train_processes') or 1} | " + " | ".join(cells) + " |")
    lines += ["", "## Data", "",
              "| data | size | command | wall s | rows/s | peak RSS MB | exit |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if r["dataset"] == "criteo":
            lines.append(f"| criteo (write TSV, {r['file_bytes'] / 2**20:,.0f} MiB) | {r['lines']:,} lines | "
                         f"write_criteo_like | {r['write']['seconds']:.1f} | {r['write']['lines_per_s']:,.0f} |  |  |")
            step = r["import"]
            size = f"{r['lines']:,} lines"
        else:
            step = r["generate"]
            size = f"{r['days']} x {r['rows_per_day']:,}"
        rate = step.get("rows_per_s") or step.get("lines_per_s")
        lines.append(f"| {r['dataset']} | {size} | `{step['command']}` | {step['seconds']:.1f} | {rate:,.0f} "
                     f"| {step['peak_rss_mb']:,.0f} | {step['exit_code']} |")
    failed = [r for r in result["runs"] for k in ("generate", "import", "night") if r.get(k, {}).get("exit_code")]
    if failed:
        lines += ["", f"{len(failed)} command(s) failed: their output's tail is in scale.json."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Staging AUC (and the oracle's) and night wall time against rows per day (synthetic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in result["runs"] if r["dataset"] == "synthetic_clicks" and not r.get("dask_external")
            and r.get("night", {}).get("exit_code") == 0]
    fig, (auc_ax, time_ax) = plt.subplots(1, 2, figsize=(10, 4))
    if runs:
        x = [r["rows_per_day"] for r in runs]
        auc_ax.plot(x, [r["night"]["staging_auc"] for r in runs], "o-", label=f"{result['arch']} (staging)")
        auc_ax.plot(x, [r["night"]["oracle_staging_auc"] for r in runs], "s--", label="oracle (true CTR)")
        time_ax.plot(x, [r["night"]["seconds"] for r in runs], "o-", label="night (wall)")
        time_ax.plot(x, [r["generate"]["seconds"] for r in runs], "^:", label=f"generate {DAYS} days")
    for ax in (auc_ax, time_ax):
        ax.set_xscale("log")
        ax.set_xlabel("rows per day")
        ax.grid(True, alpha=0.3)
        if runs:
            ax.legend()
    time_ax.set_yscale("log")
    auc_ax.set_ylabel("AUC")
    time_ax.set_ylabel("seconds")
    fig.suptitle(f"One night of the loop ({result['arch']}, {result['epochs']} epoch, {result['machine']['cpus']} CPUs)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
