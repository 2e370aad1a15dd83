"""Speed of the NVTabular preprocessing on synthetic_clicks or Criteo-format days (not a test).

Generates `--days` days of `--rows-per-day` synthetic_clicks rows (seed 7), each written as
one parquet file with row groups of `--row-group-rows`, fits on all days but the last and
transforms every day, and reports rows/s for fit and transform separately:

- before: today's in-memory path, `Preprocessor.fit(spec, frame, categorify="nvtabular")`
  (NVTabular's Categorify, no Dask client: NVTabular then computes its statistics with the
  synchronous scheduler) and `transform(frame)` per day; reading the parquet is not timed;
- the streamed paths, reading and writing parquet included, on a LocalCluster started for
  the measurement (its start-up time is reported apart): the levers in the order they were
  pulled (`--paths`), each on one worker of two threads:
    workflow:  merlin Dataset partitions, `Workflow.fit`, the merlin graph per partition;
    one-pass:  the same with `fit_workflow` (every statistic in one read of the data);
    compiled:  and the compiled transform (`feature_store/compiled.py`);
    night:     and chunks of row groups with dictionary-encoded strings (`raw_files`);
  then the night's path on each cluster shape (`--configs`);
- stat passes: each stateful op fitted alone with `Workflow.fit` on the training days
  (threads cluster), so the cost of each pass is visible.

Records `os.getloadavg()` before and after: the box is shared, numbers taken under load
are noisy. Writes benchmarks/results/preprocess_speed.json and .md.

`--dataset criteo` writes a Criteo-format TSV (`write_criteo_like`) and imports it into day
partitions with the CLI's importer (40 columns: 13 continuous, 26 strings of which 17
Categorify'd); its results go to preprocess_speed_criteo.{json,md}, next to the synthetic ones.

    python -m benchmarks.preprocess_speed [--dataset criteo] [--rows-per-day 1000000] [--days 4]
        [--row-group-rows 100000] [--part-size 64MB] [--skip-before] [--skip-ops]
        [--paths workflow one-pass compiled night] [--configs threads_1x2 processes_2x1]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from unittest import mock

import nvtabular as nvt
import pandas as pd
from nvtabular import ops

from benchmarks.report import write_results
from feature_store import workflow as workflow_module
from feature_store.categorify import FastCategorify
from feature_store.cluster import DaskConfig, dask_client, raw_dataset, raw_files
from feature_store.continuous import ContinuousChain, Steps
from feature_store.generators.synthetic import generate_day, make_world
from feature_store.spec import load_spec
from feature_store.workflow import Preprocessor

RESULTS = Path(__file__).parent / "results"
DATASET = "synthetic_clicks"
CONFIGS = {
    "threads_1x2": DaskConfig(workers=1, threads_per_worker=2, processes=False),
    "processes_2x1": DaskConfig(workers=2, threads_per_worker=1, processes=True),
}


@dataclass(frozen=True)
class Measurement:
    name: str
    fit_rows: int
    fit_s: float
    transform_rows: int
    transform_s: float
    startup_s: float = 0.0
    fit_cpu_s: float = 0.0  # CPU seconds of this process (in-process Dask workers included)
    transform_cpu_s: float = 0.0

    @property
    def fit_rows_per_s(self) -> float:
        return self.fit_rows / self.fit_s

    @property
    def transform_rows_per_s(self) -> float:
        return self.transform_rows / self.transform_s


def _write_days(root: Path, rows: int, days: int, row_group_rows: int) -> list[Path]:
    world = make_world(7)
    paths = []
    for d in range(days):
        frame = generate_day(world, date(2026, 1, 1) + timedelta(days=d), rows, 7)
        path = root / f"day-{d}.parquet"
        frame.to_parquet(path, index=False, row_group_size=row_group_rows)
        paths.append(path)
    return paths


def _write_criteo_days(root: Path, rows: int, days: int, row_group_rows: int) -> list[Path]:
    """One part file a day, row groups of `row_group_rows` lines, as `recloop datasets
    import-criteo` writes them."""
    from feature_store.datasets.criteo import import_criteo, write_criteo_like

    tsv = write_criteo_like(root / "criteo.tsv", rows * days, seed=7, chunk_lines=row_group_rows)
    import_criteo(tsv, root / "data", date(2026, 1, 1), rows_per_day=rows, chunk_lines=row_group_rows,
                  part_rows=rows)
    tsv.unlink()
    return sorted((root / "data" / "criteo").glob("day=*/*.parquet"))


def _before(spec, files: list[Path], work: Path) -> Measurement:
    frames = [pd.read_parquet(f) for f in files]
    train = pd.concat(frames[:-1], ignore_index=True)
    t0, c0 = time.perf_counter(), time.process_time()
    pre = Preprocessor.fit(spec, train, work / "before-vocab", categorify="nvtabular")
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    for frame in frames:
        pre.transform(frame)
    transform_s, transform_cpu = time.perf_counter() - t0, time.process_time() - c0
    return Measurement("before (in-memory, ops.Categorify)", len(train), fit_s,
                       sum(map(len, frames)), transform_s, 0.0, fit_cpu, transform_cpu)


@dataclass(frozen=True)
class Path_:
    """One way through fit and transform: the levers of this benchmark, in the order they were pulled."""

    reader: str  # "files": chunks of row groups, strings dictionary-encoded; "dataset": merlin partitions
    fit: str  # "one-pass": fit_workflow; "Workflow.fit": NVTabular's executor
    transform: str  # "compiled": feature_store.compiled; "workflow": the merlin graph per partition

    @property
    def label(self) -> str:
        return f"{self.reader} / {self.fit} / {self.transform}"


PATHS = {
    "workflow": Path_("dataset", "Workflow.fit", "workflow"),
    "one-pass": Path_("dataset", "one-pass", "workflow"),
    "compiled": Path_("dataset", "one-pass", "compiled"),
    "night": Path_("files", "one-pass", "compiled"),  # what a night runs
}


def _after(name: str, config: DaskConfig, spec, files: list[Path], work: Path,
           part_size: str, row_group_rows: int, path: Path_) -> Measurement:
    columns = [*spec.feature_columns, spec.label]
    t0 = time.perf_counter()
    plain_fit = (lambda workflow, ds, *args, **kwargs: workflow.fit(ds)) if path.fit == "Workflow.fit" else None
    with dask_client(config), mock.patch.object(workflow_module, "fit_workflow", plain_fit or workflow_module.fit_workflow):
        startup_s = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        if path.reader == "files":
            pre = Preprocessor.fit_files(spec, raw_files(files[:-1], columns, part_size), work / f"{name}-vocab")
        else:
            pre = Preprocessor.fit_dataset(spec, raw_dataset(files[:-1], columns, part_size), work / f"{name}-vocab")
        fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        if path.transform == "workflow":
            pre.__dict__["compiled"] = None  # the cached compiled transform: run the merlin graph instead
        t0, c0 = time.perf_counter(), time.process_time()
        rows = 0
        for i, day in enumerate(files):
            source = raw_files([day], columns, part_size) if path.reader == "files" else raw_dataset([day], columns, part_size)
            split = pre.transform_to_parquet(source, work / f"{name}-out" / f"day-{i}", spec.label, row_group_rows)
            rows += split.rows
        transform_s, transform_cpu = time.perf_counter() - t0, time.process_time() - c0
    if config.processes:  # the work ran in the worker processes: not measured here
        fit_cpu = transform_cpu = 0.0
    fit_rows = sum(int(pd.read_parquet(f, columns=[spec.label]).shape[0]) for f in files[:-1])
    return Measurement(f"{path.label} ({name})", fit_rows, fit_s, rows, transform_s, startup_s,
                       fit_cpu, transform_cpu)


def _stat_passes(spec, files: list[Path], work: Path, part_size: str) -> dict[str, float]:
    """Seconds to fit each stateful op alone on the training days (threads cluster)."""
    cats = [c.name for c in spec.categorical if c.hash_buckets is None]
    conts = [c.name for c in spec.continuous]
    thresholds = {c.name: (c.freq_threshold if c.freq_threshold > 1 else 0) for c in spec.categorical}
    graphs = {
        "FastCategorify (all categoricals)": lambda d: cats >> FastCategorify(thresholds, out_path=d),
        "ops.Categorify (one per categorical)": lambda d: sum(
            ([c] >> ops.Categorify(freq_threshold=thresholds[c], out_path=d) for c in cats[1:]),
            [cats[0]] >> ops.Categorify(freq_threshold=thresholds[cats[0]], out_path=d),
        ),
        "FillMedian >> LogOp >> Normalize": lambda d: conts >> ops.FillMedian() >> ops.LogOp() >> ops.Normalize(),
        "ContinuousChain (fill, log, normalize in one pass)": lambda d: conts >> ContinuousChain(
            {c.name: Steps(c.fill, c.clip_min, c.log, c.normalize) for c in spec.continuous}),
    }
    seconds = {}
    with dask_client(CONFIGS["threads_1x2"]):
        for name, build in graphs.items():
            ds = raw_dataset(files[:-1], [*cats, *conts], part_size)
            workflow = nvt.Workflow(build(str(work / "ops")))
            t0 = time.perf_counter()
            workflow.fit(ds)
            seconds[name] = round(time.perf_counter() - t0, 3)
    return seconds


def _markdown(results: list[Measurement], stat_s: dict[str, float], meta: dict) -> str:
    lines = [
        f"# Preprocessing speed, {meta['dataset']} ({meta['rows_per_day']:,} rows x {meta['days']} days)",
        "",
        f"Fit on {meta['days'] - 1} days, transform all {meta['days']}. {meta['cpus']} CPUs; "
        f"load average before {meta['loadavg_before']}, after {meta['loadavg_after']}.",
        "",
        "| path | fit rows/s | transform rows/s | fit s | transform s | cluster start s "
        "| fit CPU s | transform CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        lines.append(
            f"| {m.name} | {m.fit_rows_per_s:,.0f} | {m.transform_rows_per_s:,.0f} | "
            f"{m.fit_s:.2f} | {m.transform_s:.2f} | {m.startup_s:.2f} | "
            f"{m.fit_cpu_s:.2f} | {m.transform_cpu_s:.2f} |"
        )
    if stat_s:
        lines += ["", "| stat pass alone (threads cluster) | fit s |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in stat_s.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=[DATASET, "criteo"], default=DATASET)
    parser.add_argument("--rows-per-day", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--row-group-rows", type=int, default=100_000)
    parser.add_argument("--part-size", default="64MB")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--skip-before", action="store_true")
    parser.add_argument("--skip-ops", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    spec = load_spec(args.dataset)
    write = _write_criteo_days if args.dataset == "criteo" else _write_days
    work = Path(tempfile.mkdtemp(prefix="recloop-bench-pre-"))
    try:
        files = write(work, args.rows_per_day, args.days, args.row_group_rows)
        load_before = [round(x, 2) for x in os.getloadavg()]
        results = [] if args.skip_before else [_before(spec, files, work)]
        for key in args.paths:  # the levers in order, on one worker of two threads
            results.append(_after("threads_1x2", CONFIGS["threads_1x2"], spec, files, work, args.part_size,
                                  args.row_group_rows, PATHS[key]))
        for name in args.configs:  # the night's path on each cluster shape
            if name != "threads_1x2" or "night" not in args.paths:
                results.append(_after(name, CONFIGS[name], spec, files, work, args.part_size,
                                      args.row_group_rows, PATHS["night"]))
        stat_s = {} if args.skip_ops else _stat_passes(spec, files, work, args.part_size)
        load_after = [round(x, 2) for x in os.getloadavg()]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    meta = {
        "dataset": args.dataset,
        "rows_per_day": args.rows_per_day,
        "days": args.days,
        "row_group_rows": args.row_group_rows,
        "part_size": args.part_size,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "nvtabular": nvt.__version__,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }
    result = {
        **meta,
        "results": [
            {**asdict(m), "fit_rows_per_s": round(m.fit_rows_per_s),
             "transform_rows_per_s": round(m.transform_rows_per_s)}
            for m in results
        ],
        "stat_pass_seconds": stat_s,
    }
    stem = "preprocess_speed" if args.dataset == DATASET else f"preprocess_speed_{args.dataset}"
    write_results(args.out, stem, result, _markdown(results, stat_s, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
