"""Benchmark of the parquet batch loaders: recloop's ParquetBatches vs merlin-dataloader (not a test).

Writes synthetic parquet in the layout the fitted workflow writes (synthetic_clicks-like: 5
categorical fields of cardinality 10-10,000 as int64, 3 continuous float32, 5 crosses of
10,000 buckets, a float32 label from a planted logistic model, a row_id) sorted by day: one
file per day, `--row-group-rows` rows per row group (and a second copy with
`--small-row-group-rows`). Then, on the same files, every measurement `--rounds` times:

1. Iteration only (one shuffled epoch): batches/s and samples/s of
   - `tasks.loader.ParquetBatches` (buffer of `--shuffle-row-groups` row groups, with and
     without prefetch), batches already in the model's {"cat", "cont", "cross", "label"} layout;
   - `merlin.dataloader.torch.Loader(merlin.io.Dataset(files, engine="parquet"),
     batch_size, shuffle=True)` as it comes (a dict of 1-D column tensors), and with the
     columns stacked into the model's layout (what the trainer needs).
2. One `wide_deep` epoch (`models.trainer.fit`, epochs=1) over the first `--train-files`
   files fed by each loader and by `TensorBatches` over the same rows held in memory (the
   no-loader ceiling), the sources interleaved round by round: `train_samples_per_s`.
3. Peak memory of a shuffled epoch (prefetch on) against the buffer size, each in a fresh
   process.
4. Shuffle quality: per batch, the total-variation distance between its day histogram and
   the whole data's (0 = the batch looks like the data, 1 - 1/days = a batch from one day),
   averaged over the epoch's batches: full permutation, ParquetBatches at buffers of 1 row
   group up to all of them (both row-group sizes), merlin's Loader (parts_per_chunk 1, 2,
   4), no shuffle.

Writes benchmarks/results/loader_speed.json and loader_speed.md, with the load average
(the machine is shared: numbers taken while others run are noisy; compare within a round).

    python -m benchmarks.loader_speed [--rows 2000000] [--files 8] [--row-group-rows 65536]
        [--small-row-group-rows 8192] [--batch-size 1024] [--shuffle-row-groups 8]
        [--rounds 3] [--train-files 1] [--threads 2] [--skip-merlin] [--skip-train]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.report import write_results
from models.schema import Field, InputSchema
from tasks.loader import ParquetBatches

RESULTS = Path(__file__).parent / "results"
CAT_CARDS = (10, 100, 1000, 5000, 10_000)
N_CONT = 3
N_CROSS, CROSS_BUCKETS = 5, 10_000


def schema() -> InputSchema:
    return InputSchema(
        categorical=tuple(Field(f"c{i}", c) for i, c in enumerate(CAT_CARDS)),
        continuous=tuple(f"x{i}" for i in range(N_CONT)),
        crosses=tuple(Field(f"cross{i}", CROSS_BUCKETS) for i in range(N_CROSS)),
    )


def write_parquet(out: Path, rows: int, files: int, row_group_rows: int, seed: int = 0) -> list[Path]:
    """One file per day, rows in day order; label from a planted logistic model."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.5, c) for c in CAT_CARDS]
    paths, per_file = [], rows // files
    for day in range(files):
        n = per_file if day < files - 1 else rows - per_file * (files - 1)
        cols: dict[str, np.ndarray] = {}
        logit = np.full(n, -1.0)
        for i, card in enumerate(CAT_CARDS):
            ids = np.minimum(rng.zipf(1.3, n) - 1, card - 1).astype(np.int64)
            cols[f"c{i}"] = ids
            logit += weights[i][ids]
        x = rng.normal(size=(n, N_CONT)).astype(np.float32)
        for i in range(N_CONT):
            cols[f"x{i}"] = x[:, i]
        logit += 0.5 * x[:, 0] + 0.1 * day
        for i in range(N_CROSS):
            cols[f"cross{i}"] = rng.integers(0, CROSS_BUCKETS, n, dtype=np.int64)
        cols["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        cols["row_id"] = np.arange(day * per_file, day * per_file + n, dtype=np.int64)
        path = out / f"part_{day:02d}.parquet"
        pq.write_table(pa.table(cols), path, row_group_size=row_group_rows)
        paths.append(path)
    return paths


class MerlinBatches:
    """merlin-dataloader's torch Loader as a BatchSource: its 1-D column tensors stacked into
    the model's layout. It has no chunk hook, so `check` runs on every batch."""

    def __init__(self, files: list[Path], sch: InputSchema, batch_size: int, seed: int = 0,
                 parts_per_chunk: int = 1):
        import merlin.io

        self.ds = merlin.io.Dataset([str(f) for f in files], engine="parquet", cpu=True)
        self.schema, self.batch_size, self.seed = sch, batch_size, seed
        self.parts_per_chunk = parts_per_chunk
        self.rows = int(sum(pq.ParquetFile(f).metadata.num_rows for f in files))

    def loader(self, epoch: int | None):
        from merlin.dataloader.torch import Loader

        seed = self.seed * 1000 + (epoch or 0)
        return Loader(self.ds, batch_size=self.batch_size, shuffle=epoch is not None,
                      seed_fn=lambda: seed, parts_per_chunk=self.parts_per_chunk)

    def batches(self, epoch: int | None, check=None) -> Iterator[dict[str, torch.Tensor]]:
        s = self.schema
        for x, _ in self.loader(epoch):
            batch = {
                "cat": torch.stack([x[f.name] for f in s.categorical], dim=1),
                "cont": torch.stack([x[c] for c in s.continuous], dim=1),
                "cross": torch.stack([x[f.name] for f in s.crosses], dim=1),
                "label": x["label"],
                "row_id": x["row_id"],
            }
            if check is not None:
                check(batch)
            yield batch


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def time_iteration(make_iter, label: str, rounds: int) -> dict:
    """`rounds` passes of one epoch: batches/s and samples/s (best and median of the rounds;
    the first batch's wait included)."""
    before = load()
    rates, batches, samples = [], 0, 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        batches = samples = 0
        for batch in make_iter():
            batches += 1
            samples += int(next(iter(batch.values())).shape[0])
        rates.append(time.perf_counter() - t0)
    best, median = min(rates), float(np.median(rates))
    out = {"loader": label, "batches": batches, "samples": samples, "rounds": rounds,
           "samples_per_s": round(samples / best), "batches_per_s": round(batches / best, 1),
           "median_samples_per_s": round(samples / median), "median_batches_per_s": round(batches / median, 1),
           "load_before": before, "load_after": load()}
    print(f"  {label:45s} {out['samples_per_s']:>10,} samples/s  {out['batches_per_s']:>8,} "
          f"batches/s (best of {rounds}; median {out['median_samples_per_s']:,})  load {before[0]}")
    return out


def mean_tv(day_of_batch: list[np.ndarray], days: int, global_hist: np.ndarray) -> dict:
    """Mean (and p90) total-variation distance of the batches' day histograms to the global one."""
    tvs = []
    for d in day_of_batch:
        if len(d) < 2:
            continue
        h = np.bincount(d, minlength=days) / len(d)
        tvs.append(0.5 * np.abs(h - global_hist).sum())
    tvs = np.array(tvs)
    distinct = np.mean([len(np.unique(d)) for d in day_of_batch if len(d) >= 2])
    return {"mean_tv": round(float(tvs.mean()), 4), "p90_tv": round(float(np.quantile(tvs, 0.9)), 4),
            "mean_days_per_batch": round(float(distinct), 2)}


def shuffle_quality(datasets: dict[int, list[Path]], rows: int, per_file: int, days: int,
                    batch_size: int, buffer_rows: int, sch: InputSchema, with_merlin: bool) -> dict:
    """Mean TV of the batches' day histograms for every order, on the day-sorted files.

    `datasets` maps row-group sizes to files holding the same rows. ParquetBatches is measured
    with buffers of 1, 2, 4, ... row groups up to the whole data, and at `buffer_rows`.
    """
    day_of = lambda ids: (ids // per_file).clip(max=days - 1)  # noqa: E731
    global_hist = np.bincount(day_of(np.arange(rows)), minlength=days) / rows
    cut = lambda ids: [ids[i : i + batch_size] for i in range(0, rows, batch_size)]  # noqa: E731
    out: dict = {"metric": "mean over the epoch's batches of TV(day histogram of the batch, global day "
                           "histogram); 0 = representative, 1 - 1/days = one day per batch",
                 "days": days, "batch_size": batch_size,
                 "full_permutation": mean_tv(cut(day_of(np.random.default_rng(1).permutation(rows))), days,
                                             global_hist),
                 "no_shuffle": mean_tv(cut(day_of(np.arange(rows))), days, global_hist)}
    for rg_rows, files in sorted(datasets.items(), reverse=True):
        total = sum(pq.ParquetFile(f).metadata.num_row_groups for f in files)
        ks = sorted({2**i for i in range(int(np.log2(total)) + 1)} | {max(1, buffer_rows // rg_rows), total})
        for k in ks:
            src = ParquetBatches.for_schema(files, sch, "label", batch_size=batch_size, seed=0,
                                            shuffle_row_groups=k, prefetch=True, extra=["row_id"])
            q = mean_tv([day_of(b["row_id"].numpy()) for b in src.batches(1)], days, global_hist)
            q.update(row_group_rows=rg_rows, buffer_row_groups=k, buffer_rows=min(k * rg_rows, rows))
            out[f"parquet_batches_rg{rg_rows}_buffer{k}"] = q
    if with_merlin:
        files = datasets[max(datasets)]
        for ppc in (1, 2, 4):
            src = MerlinBatches(files, sch, batch_size, parts_per_chunk=ppc)
            q = mean_tv([day_of(b["row_id"].numpy()) for b in src.batches(1)], days, global_hist)
            q.update(parts_per_chunk=ppc, npartitions=src.ds.npartitions)
            out[f"merlin_loader_shuffle_parts_per_chunk{ppc}"] = q
    return out


_RSS_PROBE = """
import resource, sys
from benchmarks.loader_speed import schema
from tasks.loader import ParquetBatches
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
files, k = sys.argv[1].split(","), int(sys.argv[2])
src = ParquetBatches.for_schema(files, schema(), "label", shuffle_row_groups=k, prefetch=True)
src._load([0], 1, 0)  # warm up pyarrow and numpy (libraries, pools) before the baseline
base = peak = rss()
for b in src.batches(1):
    peak = max(peak, rss())
print(peak - base)
"""


def peak_memory(files: list[Path], rg_rows: int, buffers: list[int]) -> list[dict]:
    """Peak RSS (sampled at every batch) of one shuffled epoch (prefetch on) above the RSS before
    it, each in a fresh process."""
    import subprocess
    import sys

    bytes_per_row = 8 * (len(CAT_CARDS) + N_CROSS) + 4 * (N_CONT + 1)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    out = []
    for k in buffers:
        mb = float(subprocess.run([sys.executable, "-c", _RSS_PROBE, ",".join(map(str, files)), str(k)],
                                  check=True, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}).stdout)
        out.append({"buffer_row_groups": k, "buffer_mb": round(min(k * rg_rows, rows) * bytes_per_row / 2**20, 1),
                    "data_mb_as_tensors": round(rows * bytes_per_row / 2**20, 1), "peak_rss_growth_mb": round(mb)})
        print(f"  buffer {k:3d} row groups ({out[-1]['buffer_mb']} MB): peak RSS +{round(mb)} MB "
              f"(whole data as tensors {out[-1]['data_mb_as_tensors']} MB)")
    return out


def train_epoch(source, val, sch, label: str, batch_size: int, threads: int) -> dict:
    from models import build_model
    from models.trainer import TrainConfig, fit

    model = build_model("wide_deep", sch, {"embedding_dim": 16, "hidden": [256, 128, 64]}, seed=0)
    before = load()
    result = fit(model, source, val, TrainConfig(epochs=1, batch_size=batch_size, threads=threads))
    return {"train_samples_per_s": result.train_samples_per_s, "val_auc": result.best_val_auc,
            "load_before": before[0]}


def train_rounds(sources: dict, val, sch, batch_size: int, threads: int, rounds: int) -> list[dict]:
    """One wide_deep epoch per source, the sources interleaved, `rounds` times: a busy
    neighbour slows every source alike rather than the one that happened to run then."""
    runs: dict[str, list[dict]] = {name: [] for name in sources}
    for r in range(rounds):
        for name, make in sources.items():
            run = train_epoch(make(), val, sch, name, batch_size, threads)
            runs[name].append(run)
            print(f"  round {r + 1} {name:32s} {run['train_samples_per_s']:>9,.0f} samples/s  "
                  f"val_auc {run['val_auc']:.4f}  load {run['load_before']}")
    out = []
    for name, rs in runs.items():
        rates = [x["train_samples_per_s"] for x in rs]
        out.append({"loader": name, "rounds": rounds, "train_samples_per_s": round(max(rates)),
                    "median_train_samples_per_s": round(float(np.median(rates))),
                    "all_train_samples_per_s": [round(x) for x in rates],
                    "val_auc": round(rs[0]["val_auc"], 4), "load_1min": [x["load_before"] for x in rs]})
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=8, help="files = days")
    ap.add_argument("--row-group-rows", type=int, default=65_536)
    ap.add_argument("--small-row-group-rows", type=int, default=8192,
                    help="a second copy of the data with smaller row groups (shuffle quality); 0: none")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--shuffle-row-groups", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of every measurement")
    ap.add_argument("--train-files", type=int, default=1, help="files the wide_deep epoch reads")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-merlin", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", module=r"merlin\..*")
    torch.set_num_threads(args.threads)
    sch = schema()
    result: dict = {"date": str(date.today()), "machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch": torch.__version__, "pyarrow": pa.__version__,
                    "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "load_average_start": load()}
    with tempfile.TemporaryDirectory(prefix="loader_speed_") as tmp:
        t0 = time.perf_counter()
        (Path(tmp) / "big").mkdir()
        files = write_parquet(Path(tmp) / "big", args.rows, args.files, args.row_group_rows)
        per_file = args.rows // args.files
        md = pq.ParquetFile(files[0]).metadata
        result["data"] = {"rows": args.rows, "files": len(files), "row_groups_per_file": md.num_row_groups,
                          "bytes_on_disk": sum(f.stat().st_size for f in files),
                          "columns": md.num_columns, "write_seconds": round(time.perf_counter() - t0, 1)}
        datasets = {args.row_group_rows: files}
        if args.small_row_group_rows:
            (Path(tmp) / "small").mkdir()
            datasets[args.small_row_group_rows] = write_parquet(Path(tmp) / "small", args.rows, args.files,
                                                                args.small_row_group_rows)
        print(f"wrote {args.rows:,} rows in {len(files)} files ({md.num_row_groups} row groups each)")
        bs, k = args.batch_size, args.shuffle_row_groups

        def ours(prefetch: bool, fs=files, k=k):
            return ParquetBatches.for_schema(fs, sch, "label", batch_size=bs, seed=0,
                                             shuffle_row_groups=k, prefetch=prefetch)

        print("iteration, one shuffled epoch:")
        n = args.rounds
        it = [time_iteration(lambda: ours(True).batches(1), f"ParquetBatches(buffer {k} rg, prefetch)", n),
              time_iteration(lambda: ours(False).batches(1), f"ParquetBatches(buffer {k} rg, no prefetch)", n),
              time_iteration(lambda: ours(True).batches(None), "ParquetBatches(in order, prefetch)", n)]
        if args.small_row_group_rows:
            small_k = k * args.row_group_rows // args.small_row_group_rows  # the same buffer rows
            it.append(time_iteration(
                lambda: ours(True, datasets[args.small_row_group_rows], small_k).batches(1),
                f"ParquetBatches({args.small_row_group_rows}-row rg, buffer {small_k} rg, prefetch)", n))
        if not args.skip_merlin:
            merlin = MerlinBatches(files, sch, bs)
            it.append(time_iteration(lambda: (x for x, _ in merlin.loader(1)),
                                     "merlin Loader(shuffle) raw columns", n))
            it.append(time_iteration(lambda: merlin.batches(1), "merlin Loader(shuffle) -> model layout", n))
        result["iteration"] = it

        if not args.skip_train:
            from models.trainer import TensorBatches

            train_files = files[: args.train_files]
            val_tensors = _concat(ours(False, files[-1:]).batches(None), 50_000)
            in_memory = _concat(ours(False, train_files).batches(None), None)
            print(f"one wide_deep epoch on {len(train_files)} file(s) ({in_memory['label'].shape[0]:,} rows), "
                  f"{n} interleaved rounds:")
            sources = {
                "TensorBatches (in memory)": lambda: TensorBatches(in_memory, bs),
                "ParquetBatches (prefetch)": lambda: ours(True, train_files),
                "ParquetBatches (no prefetch)": lambda: ours(False, train_files),
            }
            if not args.skip_merlin:
                sources["merlin Loader"] = lambda: MerlinBatches(train_files, sch, bs)
            result["wide_deep_epoch"] = train_rounds(sources, val_tensors, sch, bs, args.threads, n)

        print("memory, one shuffled epoch with prefetch:")
        total_rgs = len(files) * md.num_row_groups
        result["peak_memory"] = peak_memory(files, args.row_group_rows, sorted({2, k, total_rgs}))
        print("shuffle quality:")
        result["shuffle_quality"] = shuffle_quality(datasets, args.rows, per_file, args.files, bs,
                                                    k * args.row_group_rows, sch, not args.skip_merlin)
        for name, q in result["shuffle_quality"].items():
            if isinstance(q, dict):
                print(f"  {name:45s} mean TV {q['mean_tv']:.4f}  days/batch {q['mean_days_per_batch']}")
    result["load_average_end"] = load()
    write_results(args.out, "loader_speed", result, markdown(result))
    return result


def _concat(batches, limit: int | None) -> dict[str, torch.Tensor]:
    parts: list[dict[str, torch.Tensor]] = []
    n = 0
    for b in batches:
        parts.append(b)
        n += b["label"].shape[0]
        if limit is not None and n >= limit:
            break
    return {key: torch.cat([p[key] for p in parts])[:limit] for key in ("cat", "cont", "cross", "label")}


def markdown(r: dict) -> str:
    lines = [f"# Parquet loaders ({r['date']}, {r['cpus']} CPUs, load {r['load_average_start']} at start)", "",
             f"{r['data']['rows']:,} rows, {r['data']['files']} files, {r['data']['row_groups_per_file']} "
             f"row groups per file, batch {r['config']['batch_size']}.", "",
             "| loader (one shuffled epoch, iteration only) | samples/s (best) | batches/s (best) | "
             "median samples/s | load 1-min |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {x['loader']} | {x['samples_per_s']:,} | {x['batches_per_s']:,} | "
              f"{x['median_samples_per_s']:,} | {x['load_before'][0]} |" for x in r["iteration"]]
    if "wide_deep_epoch" in r:
        lines += ["", "| wide_deep epoch fed by | train samples/s (best) | median | val AUC | load 1-min |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {x['loader']} | {x['train_samples_per_s']:,} | {x['median_train_samples_per_s']:,} | "
                  f"{x['val_auc']} | {x['load_1min']} |" for x in r["wide_deep_epoch"]]
    if "peak_memory" in r:
        lines += ["", "| buffer (row groups) | buffer MB | peak RSS growth MB (epoch, prefetch) | whole data MB |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {m['buffer_row_groups']} | {m['buffer_mb']} | {m['peak_rss_growth_mb']} | "
                  f"{m['data_mb_as_tensors']} |" for m in r["peak_memory"]]
    q = r["shuffle_quality"]
    lines += ["", f"Shuffle quality: {q['metric']}.", "", "| order | mean TV | p90 TV | days per batch |",
              "|---|---:|---:|---:|"]
    lines += [f"| {name} | {v['mean_tv']} | {v['p90_tv']} | {v['mean_days_per_batch']} |"
              for name, v in q.items() if isinstance(v, dict)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
