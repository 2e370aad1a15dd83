"""Validation speed on synthetic_clicks or Criteo-format part files (not a test).

Writes `days` days of `rows_per_day` rows as parquet (`files_per_day` files per day, row groups
of `row_group_rows`): synthetic impressions (`--dataset synthetic_clicks`), or a Criteo-format
TSV (`write_criteo_like`) imported into day partitions with the importer the CLI uses
(`--dataset criteo`: 40 columns, 26 of them high-cardinality strings). Then times the full
suite (every rule on every row of every day, the last day as the staging day) two ways:

- streaming: `validate_day_files` on the files, for each `--chunk-rows`;
- streaming + progress: the night's call (`tasks.validate.validate_files`: the footer counts
  ingest made, progress log lines), at the default chunk size;
- before: today's night, every file read whole (`partitions.read_part`) and `validate_days` on
  the frames (skip with `--no-before`).

Results go to `benchmarks/results/validation_speed.{json,md}` with the load average next to
each number: the machine has 2 cores shared with other work, so a loaded run is slower. The
synthetic results are the file's top-level keys; each other dataset's go under its name
(`"criteo": {...}`), so a run of one dataset keeps the other's numbers.

    python -m benchmarks.validation_speed [--dataset criteo] [--rows-per-day 1000000] [--days 3]
        [--chunk-rows 250000 1000000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

from benchmarks.report import write_results

RESULTS = Path(__file__).parent / "results"
DATASET = "synthetic_clicks"  # its results are the top-level keys of the JSON
DATASETS = (DATASET, "criteo")
START = date(2026, 1, 1)


@dataclass(frozen=True)
class Measurement:
    variant: str  # "streaming" or "before"
    chunk_rows: int | None
    rows: int
    seconds: float
    rows_per_s: float
    cpu_seconds: float  # this process's CPU time (all its threads): less sensitive to other load
    rows_per_cpu_s: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    all_ok: bool


def _write_days(root: Path, days: int, rows_per_day: int, files_per_day: int, row_group_rows: int) -> list[date]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from feature_store.generators.synthetic import generate_day, make_world
    from feature_store.partitions import day_dir

    world, start = make_world(7), START
    written = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        frame = generate_day(world, day, rows_per_day, seed=7)
        directory = day_dir(root, DATASET, day)
        directory.mkdir(parents=True, exist_ok=True)
        step = -(-rows_per_day // files_per_day)
        for part in range(files_per_day):
            table = pa.Table.from_pandas(frame.iloc[part * step:(part + 1) * step], preserve_index=False)
            pq.write_table(table, directory / f"part-{part}.parquet", row_group_size=row_group_rows)
        written.append(day)
    return written


def _write_criteo_days(root: Path, days: int, rows_per_day: int, files_per_day: int, row_group_rows: int) -> list[date]:
    """A Criteo-format TSV cut into day partitions by the importer (`recloop datasets
    import-criteo`): row groups of `row_group_rows` lines, `files_per_day` part files a day."""
    from feature_store.datasets.criteo import import_criteo, write_criteo_like

    tsv = write_criteo_like(root / "criteo.tsv", days * rows_per_day, seed=7, chunk_lines=row_group_rows)
    summary = import_criteo(tsv, root, START, rows_per_day=rows_per_day, chunk_lines=row_group_rows,
                            part_rows=-(-rows_per_day // files_per_day))
    tsv.unlink()
    return sorted(date.fromisoformat(d) for d in summary.days)


def _timed(variant: str, chunk_rows: int | None, rows: int, run) -> Measurement:
    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    reports = run()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Measurement(variant, chunk_rows, rows, round(seconds, 3), round(rows / seconds), round(cpu, 3),
                       round(rows / cpu), load_before, os.getloadavg(), all(r.ok for r in reports))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=DATASETS, default=DATASET)
    ap.add_argument("--rows-per-day", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--files-per-day", type=int, default=2)
    ap.add_argument("--row-group-rows", type=int, default=100_000)
    ap.add_argument("--chunk-rows", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=2, help="streaming runs per chunk size (the best is kept)")
    ap.add_argument("--no-before", action="store_true", help="skip the read-whole baseline")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401 - imported once per night; timed apart

    from feature_store.partitions import partition_files, read_part
    from feature_store.spec import load_spec
    from feature_store.validation import (
        CHUNK_ROWS,
        STAGING_DAY,
        DayFiles,
        DayParts,
        validate_day_files,
        validate_days,
    )

    import_seconds = time.perf_counter() - t0
    spec = load_spec(args.dataset)
    root = Path(tempfile.mkdtemp(prefix="recloop-valbench-"))
    write = _write_criteo_days if args.dataset == "criteo" else _write_days
    try:
        # Written by a child process: this process's peak RSS is then the validator's alone.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            days = pool.submit(write, root, args.days, args.rows_per_day, args.files_per_day,
                               args.row_group_rows).result()
        rows = args.days * args.rows_per_day
        files = [DayFiles(d, partition_files(root, args.dataset, d), STAGING_DAY if d == days[-1] else None)
                 for d in days]
        measurements = []
        for chunk_rows in args.chunk_rows:
            runs = [_timed("streaming", chunk_rows, rows, lambda c=chunk_rows: validate_day_files(files, spec, c))
                    for _ in range(args.repeats)]
            measurements.append(min(runs, key=lambda m: m.seconds))
        from feature_store.partitions import count_rows
        from tasks.validate import validate_files

        counts = {p: count_rows(p) for d in files for p in d.files}  # ingest's footer counts
        runs = [_timed("streaming + progress", CHUNK_ROWS, rows,
                       lambda: validate_files(files, spec, counts, log=lambda line: None))
                for _ in range(args.repeats)]
        measurements.append(min(runs, key=lambda m: m.seconds))
        streaming_max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if not args.no_before:
            def before():  # the night today: ingest reads every file whole, validation gets the frames
                parts = [DayParts(d.day, [(str(p), read_part(p)) for p in d.files], d.role) for d in files]
                return validate_days(parts, spec)

            measurements.append(_timed("before", None, rows, before))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    result = {
        "benchmark": f"validation of {args.dataset} part files (every rule, every row)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows_per_day": args.rows_per_day,
        "days": args.days,
        "files_per_day": args.files_per_day,
        "row_group_rows": args.row_group_rows,
        "gx_import_seconds": round(import_seconds, 2),
        "streaming_max_rss_mb": round(streaming_max_rss_mb),
        "measurements": [asdict(m) for m in measurements],
    }
    saved = _merged(args.out / "validation_speed.json", args.dataset, result)
    markdown = "\n".join(_table(name, saved if name == DATASET else saved[name])
                         for name in DATASETS if name == DATASET or name in saved)
    write_results(args.out, "validation_speed", saved, markdown)
    return result


def _merged(path: Path, dataset: str, result: dict) -> dict:
    """The results file with `dataset`'s section replaced and the other datasets' kept."""
    saved = json.loads(path.read_text()) if path.exists() else {}
    others = {name: saved[name] for name in DATASETS if name != DATASET and name in saved}
    if dataset == DATASET:
        return {**result, **others}
    synthetic = {k: v for k, v in saved.items() if k not in DATASETS}
    return {**synthetic, **others, dataset: result}


def _table(dataset: str, result: dict) -> str:
    lines = [
        f"# Validation speed: {result['days']} days x {result['rows_per_day']:,} rows of {dataset}",
        "",
        f"{result['files_per_day']} parquet files per day, row groups of {result['row_group_rows']:,} rows; "
        f"GX import {result['gx_import_seconds']:.1f} s (once per process, not in the times); "
        f"peak RSS after the streaming runs {result['streaming_max_rss_mb']:.0f} MB.",
        "",
        "| variant | chunk rows | seconds | rows/s | CPU s | rows per CPU s | load avg (1 min) before -> after | all ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in result["measurements"]:
        chunk = f"{m['chunk_rows']:,}" if m["chunk_rows"] else "whole file"
        lines.append(f"| {m['variant']} | {chunk} | {m['seconds']:.2f} | {m['rows_per_s']:,} | "
                     f"{m['cpu_seconds']:.2f} | {m['rows_per_cpu_s']:,} | {m['load_before'][0]:.2f} -> "
                     f"{m['load_after'][0]:.2f} | {'y' if m['all_ok'] else 'n'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
