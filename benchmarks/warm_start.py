"""Warm start against a cold start, night after night on synthetic_clicks (not a test).

Night 1 trains a cold champion. On each of nights 2..N the same architecture is trained twice
from the same seed on the same prepared data: cold, and warm from the current champion
(remapped through both vocabularies: every night refits Categorify on a window one day later).
The warm model goes through the real staging gate and, when it passes, becomes the champion
of the next night, which is what a night with `RECLOOP_WARM_START=auto` does; the cold one is
the counterfactual, scored on the same days. Both run every epoch (patience = epochs), so the
curves are whole; the staging AUC is the restored best epoch's, as in a night.

Per night: the champion's AUC on tonight's validation day (through its own bundle and
preprocessing), validation AUC after each epoch (epoch 0: before the first step) for both
runs, the epochs and the training seconds (train + validation per epoch) until the first epoch
at or above the champion's AUC, what the warm start itself cost (champion bundle load, id maps,
remap, the epoch-0 validation) and the staging AUC of both and of the champion.

    python -m benchmarks.warm_start [--rows-per-day 20000] [--nights 6] [--window-days 4]
                                    [--epochs 4] [--arch wide_deep]

Results: `benchmarks/results/warm_start.{json,md}`. The machine is shared: the load average
at the start and the end is recorded.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from benchmarks.report import write_results

RESULTS = Path(__file__).parent / "results"
DATASET = "synthetic_clicks"
START = date(2026, 1, 1)


@dataclass
class Run:
    """One training run of a night (cold or warm)."""

    val_auc: list[float]  # index = epoch; 0 is before the first step
    epoch_seconds: list[float]  # per epoch 1.., train + validation
    epochs_to_champion: int | None  # first epoch with val AUC >= the champion's; None: never
    seconds_to_champion: float | None  # training seconds until then (0 at epoch 0)
    best_epoch: int
    staging_auc: float
    overhead_seconds: float = 0.0  # warm: champion load + maps + remap + epoch-0 validation
    copied_share: dict[str, float] = field(default_factory=dict)
    fallback: str = ""


@dataclass
class NightResult:
    night: int
    run_date: str
    data_window: str
    champion: str  # its version
    champion_val_auc: float  # on tonight's validation day, through its own bundle
    champion_staging_auc: float
    cold: Run
    warm: Run
    warm_promoted: bool


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows-per-day", type=int, default=20_000)
    ap.add_argument("--nights", type=int, default=6, help="night 1 makes the champion; 2..N compare")
    ap.add_argument("--window-days", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--arch", default="wide_deep")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    load_start = [round(v, 2) for v in os.getloadavg()]
    home = Path(tempfile.mkdtemp(prefix="recloop-bench-warm-"))
    os.environ["RECLOOP_HOME"] = str(home)
    os.environ["RECLOOP_SETTINGS_FILE"] = str(home / "absent.env")
    from flows.cli import _quiet_libraries

    _quiet_libraries()
    from feature_store.generators.synthetic import generate_synthetic
    from models.trainer import TrainConfig
    from tasks import registry, tracking
    from tasks.settings import get_settings

    settings = get_settings(window_days=args.window_days)
    days = args.window_days + 1 + args.nights
    generate_synthetic(settings.resolved_data_root, start=START, days=days, rows_per_day=args.rows_per_day, seed=7)
    client = tracking.configure(settings)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs, seed=0,
                         threads=args.threads)
    name = registry.registered_model_name(DATASET)
    first = START + timedelta(days=args.window_days + 1)  # the first date with a whole window
    t0 = time.perf_counter()
    nights = []
    for k in range(args.nights):
        result = _night(k + 1, first + timedelta(days=k), settings, client, name, config, args.arch, home)
        if result is not None:
            nights.append(result)
            print(_row(result))
    result = {
        "benchmark": "warm start vs cold start, nights 2..N on synthetic_clicks",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_average_start": load_start,
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "wall_seconds": time.perf_counter() - t0,
        "rows_per_day": args.rows_per_day, "window_days": args.window_days, "arch": args.arch,
        "train": asdict(config),
        "nights": [asdict(n) for n in nights],
    }
    write_results(args.out, "warm_start", result, markdown(result))
    return result


def _night(k: int, run_date: date, settings, client, name: str, config, arch: str, home: Path) -> NightResult | None:
    """Night k: prepare, then (night 1) a cold champion, or (nights 2..) cold vs warm."""
    import mlflow

    from feature_store.spec import load_spec
    from models import build_model
    from models.metrics import roc_auc
    from models.trainer import evaluate
    from tasks import registry, tracking
    from tasks.handoff import Night
    from tasks.ingest import load_window
    from tasks.preprocess import prepare
    from tasks.stage import approve_and_promote, predict_raw, run_staging
    from tasks.train import train_candidate
    from tasks.warm_start import OFF_SOURCE, load_source

    def quiet(_: str) -> None:
        pass

    spec = load_spec(DATASET)
    window = load_window(settings.resolved_data_root, spec, run_date, settings.window_days)
    data = prepare(window, spec, home / f"work-{run_date}", settings.stream, settings.dask, config, log=quiet)
    tags = {"dataset": DATASET, "run_date": str(run_date), "data_window": window.data_window,
            "validation_day": str(window.val_day), "staging_day": str(window.holdout_day)}
    night = Night(DATASET, run_date, tags).started(*tracking.start_night(
        client, DATASET, f"bench-night-{run_date}", tags, tracking.artifact_location(settings)))
    y = data.holdout_labels

    def train(source):
        return train_candidate(arch, data, spec, config, None, night, log=quiet, warm_source=source)

    def promote(candidate) -> bool:
        """The real gate, then `auto` approval: what a night does with its one candidate."""
        outcome = run_staging(client, night, [candidate], data.holdout_raw, y, settings.gate, log=quiet)
        return approve_and_promote(client, night, outcome, "auto") is not None

    if k == 1:
        assert promote(train(OFF_SOURCE)), "night 1's cold model did not pass the absolute floor"
        return None

    mv = registry.alias_version(client, name, registry.CHAMPION)
    bundle = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")  # its own preprocessing
    val_raw = window.day(window.val_day, settings.stream.chunk_rows)
    champion_val_auc = roc_auc(val_raw.column(spec.label), predict_raw(bundle, val_raw))
    champion_staging_auc = roc_auc(y, predict_raw(bundle, data.holdout_raw))

    cold_start_auc = evaluate(build_model(arch, data.schema, None, seed=config.seed), data.val)[1]  # train's build
    cold = train(OFF_SOURCE)
    t0 = time.perf_counter()
    source = load_source(client, name, data.preprocessor, "auto", window.holdout_day)
    load_seconds = time.perf_counter() - t0
    warm = train(source)
    ws = warm.warm_start
    return NightResult(
        night=k, run_date=str(run_date), data_window=window.data_window, champion=str(mv.version),
        champion_val_auc=champion_val_auc, champion_staging_auc=champion_staging_auc,
        cold=_run(cold, cold_start_auc, champion_val_auc, roc_auc(y, cold.holdout_pred)),
        warm=_run(warm, ws.initial_val_auc if ws.warm else float("nan"), champion_val_auc,
                  roc_auc(y, warm.holdout_pred), load_seconds + ws.seconds, ws.copied_share, ws.fallback),
        warm_promoted=promote(warm),
    )


def _run(cand, start_auc: float, target: float, staging_auc: float, overhead: float = 0.0,
         copied_share: dict | None = None, fallback: str = "") -> Run:
    aucs = [float(start_auc)] + [h["val_auc"] for h in cand.result.history]
    seconds = [h["seconds"] for h in cand.result.history]
    reached = next((e for e, auc in enumerate(aucs) if auc >= target), None)
    return Run(val_auc=aucs, epoch_seconds=seconds, epochs_to_champion=reached,
               seconds_to_champion=None if reached is None else float(sum(seconds[:reached])),
               best_epoch=cand.result.best_epoch, staging_auc=staging_auc, overhead_seconds=overhead,
               copied_share=dict(copied_share or {}), fallback=fallback)


def _row(n: NightResult) -> str:
    return (f"night {n.night}: champion v{n.champion} val AUC {n.champion_val_auc:.4f}; cold "
            f"{' '.join(f'{a:.4f}' for a in n.cold.val_auc)}; warm {' '.join(f'{a:.4f}' for a in n.warm.val_auc)}")


def _reach(run: dict) -> str:
    if run["epochs_to_champion"] is None:
        return "not reached"
    return f"{run['epochs_to_champion']} ({run['seconds_to_champion']:.1f} s)"


def markdown(result: dict) -> str:
    t = result["train"]
    lines = [
        f"# Warm start vs cold start: {result['arch']} on synthetic_clicks, nights 2-{len(result['nights']) + 1}",
        "",
        f"{result['rows_per_day']:,} rows a day, a {result['window_days']}-day window (the last day validates), "
        f"the staging day after it; {t['epochs']} epochs each (no early stop), batch {t['batch_size']}, "
        f"{t['threads']} threads, seed {t['seed']}. Load average at the start {result['load_average_start']}, "
        f"at the end {result['load_average_end']} ({result['machine']['cpus']} CPUs, shared; run niced). "
        f"Whole benchmark {result['wall_seconds']:.0f} s.",
        "",
        "Validation AUC after each epoch (epoch 0: before the first step). *Reach* = the epochs and training "
        "seconds until the first epoch at or above the champion's AUC on the same validation day.",
        "",
        "| night | champion (val AUC) | cold: val AUC by epoch | warm: val AUC by epoch | cold reach | warm reach "
        "| warm overhead | staging AUC champion / cold / warm | warm promoted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in result["nights"]:
        cold, warm = n["cold"], n["warm"]
        lines.append(
            f"| {n['night']} ({n['run_date']}) | v{n['champion']} ({n['champion_val_auc']:.4f}) "
            f"| {' '.join(f'{a:.4f}' for a in cold['val_auc'])} | {' '.join(f'{a:.4f}' for a in warm['val_auc'])} "
            f"| {_reach(cold)} | {_reach(warm)} | {warm['overhead_seconds']:.1f} s "
            f"| {n['champion_staging_auc']:.4f} / {cold['staging_auc']:.4f} / {warm['staging_auc']:.4f} "
            f"| {'yes' if n['warm_promoted'] else 'no'} |")
    shares = [n["warm"]["copied_share"] for n in result["nights"]]
    if shares:
        fields = list(shares[0])
        lines += ["", "Share of each field's rows copied from the champion (warm runs):", "",
                  "| night | " + " | ".join(fields) + " |", "|---|" + "---|" * len(fields)]
        for n, s in zip(result["nights"], shares):
            lines.append(f"| {n['night']} | " + " | ".join(f"{s.get(f, float('nan')):.2f}" for f in fields) + " |")
    cold_final = np.mean([n["cold"]["staging_auc"] for n in result["nights"]]) if result["nights"] else float("nan")
    warm_final = np.mean([n["warm"]["staging_auc"] for n in result["nights"]]) if result["nights"] else float("nan")
    lines += ["", f"Mean staging AUC over the nights: cold {cold_final:.4f}, warm {warm_final:.4f}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
