"""Bad input and faults against a real night: the table of what `recloop run` does with each.

Every case runs the real CLI in its own process (`python -m flows.cli ...`) against one
SQLite MLflow store that holds a `wide` champion, with the synthetic log (12 days x 3,000
rows, like the report in issue 8) copied and broken per case. Recorded per case: the exit
status, the first line on stderr, and whether the registry and the tracking store are as they
were (champion version, version count, run count, no FAILED or RUNNING runs) once the case and
its repair (the `then` command) are done. Faults kill the process for real (RECLOOP_FAULT).

    python -m benchmarks.robustness [--rows-per-day 3000] [--only NAME ...]

Writes benchmarks/results/robustness.{json,md}. Takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

from benchmarks.report import write_results

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATASET = "synthetic_clicks"
START = date(2026, 1, 1)
FIRST_NIGHT = "2026-01-10"  # staging 01-09, training 01-02..01-08 (window 7)


# Small nights and a relaxed gate (as in the report): every night reaches registration,
# so the faults after it have something to interrupt. The gate itself is tested elsewhere.
GATE = {"RECLOOP_TRAIN_BATCH_SIZE": "256", "RECLOOP_GATE_BOOTSTRAP_SAMPLES": "50", "RECLOOP_GATE_MIN_AUC": "0.5",
        "RECLOOP_GATE_CALIBRATION_BOUNDS": "[0.2, 5.0]", "RECLOOP_GATE_AUC_TOLERANCE": "1.0",
        "RECLOOP_GATE_LOGLOSS_TOLERANCE": "1.0"}


@dataclass
class Case:
    name: str
    what: str
    argv: list[str]
    setup: Callable[[Path, Path], dict[str, str]] | None = None  # (data_root, work) -> extra env
    fault: str | None = None
    then: list[str] | None = None  # a repair command run after the case (doctor, the next night)
    changes_registry: bool = False  # expected to change it (a fault after registration, a promotion)


@dataclass
class Outcome:
    name: str
    what: str
    command: str
    exit_code: int
    first_line: str
    then: str = ""
    then_exit: int | None = None
    then_first_line: str = ""
    registry_unchanged: bool = True
    consistent_after: bool = True
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _part(root: Path, day: str) -> Path:
    return root / DATASET / f"day={day}" / "part-0.parquet"


def _edit(day: str, fn) -> Callable[[Path, Path], dict[str, str]]:
    def setup(root: Path, work: Path) -> dict[str, str]:
        path = _part(root, day)
        df = pd.read_parquet(path)
        fn(df, path)
        return {}
    return setup


def _frame(day: str, fn) -> Callable[[Path, Path], dict[str, str]]:
    return _edit(day, lambda df, path: fn(df).to_parquet(path))


def _spec_typo(root: Path, work: Path) -> dict[str, str]:
    from feature_store.spec import SPEC_DIR

    text = (SPEC_DIR / f"{DATASET}.yaml").read_text().replace("freq_threshold: 3", "freq_treshold: 3", 1)
    (work / "typo.yaml").write_text(text)
    return {}


def _home_under_file(root: Path, work: Path) -> dict[str, str]:
    (work / "a-file").write_text("x")
    return {"RECLOOP_HOME": str(work / "a-file" / "home")}


def _dead_tracking(root: Path, work: Path) -> dict[str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"RECLOOP_TRACKING_URI": f"http://127.0.0.1:{port}"}


def _delete_champion_weights(home: Path) -> Callable[[Path, Path], dict[str, str]]:
    def setup(root: Path, work: Path) -> dict[str, str]:
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
        champion = client.get_model_version_by_alias(f"{DATASET}-ranker", "champion")
        model_id = champion.source.removeprefix("models:/")
        for p in (home / "artifacts").rglob("model.pt"):
            if model_id in str(p):
                p.unlink()
        return {}
    return setup


def _hold_lock(home: Path) -> Callable[[Path, Path], dict[str, str]]:
    def setup(root: Path, work: Path) -> dict[str, str]:
        script = (f"import time; from pathlib import Path; from tasks.lock import NightLock; "
                  f"NightLock(Path({str(home)!r}), {DATASET!r}).acquire(0, run_date='2026-01-11'); "
                  "print('held', flush=True); time.sleep(120)")
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        proc.stdout.readline()
        _HELD.append(proc)
        return {"RECLOOP_LOCK_WAIT_S": "5"}
    return setup


_HELD: list[subprocess.Popen] = []


def cases(home: Path) -> list[Case]:
    night = ["run", "--date", "2026-01-11", "--arch", "wide", "--epochs", "2"]
    d = "2026-01-05"  # a training day of that night
    return [
        Case("corrupt parquet", "bytes that are not parquet", night,
             _edit(d, lambda df, p: p.write_bytes(b"PAR1 not a parquet file"))),
        Case("zero-byte file", "an empty part file", night, _edit(d, lambda df, p: p.write_bytes(b""))),
        Case("csv named .parquet", "a CSV under a parquet name", night,
             _edit(d, lambda df, p: p.write_text(df.to_csv(index=False)))),
        Case("csv part lacking a column", "a CSV part without `ts` next to the parquet part", night,
             _edit(d, lambda df, p: df.head(50).drop(columns=["ts"]).to_csv(p.with_name("part-1.csv"), index=False))),
        Case("missing column", "parquet part without `device`", night, _frame(d, lambda df: df.drop(columns=["device"]))),
        Case("wrong type", "`hour` as strings", night, _frame(d, lambda df: df.assign(hour=df["hour"].astype(str)))),
        Case("label value 2", "7 clicks of 2", night,
             _frame(d, lambda df: df.assign(click=[2] * 7 + list(df["click"][7:])))),
        Case("null flood", "half of `user_segment` null (limit 1%)", night,
             _frame(d, lambda df: df.assign(user_segment=df["user_segment"].where(df.index % 2 == 0)))),
        Case("null labels", "5 null clicks", night,
             _frame(d, lambda df: df.assign(click=df["click"].astype("Int64").where(df.index >= 5)))),
        Case("+inf price", "4 prices of +inf (the rule has a minimum only)", night,
             _frame(d, lambda df: df.assign(price=[float("inf")] * 4 + list(df["price"][4:])))),
        Case("-inf price", "a price of -inf", night,
             _frame(d, lambda df: df.assign(price=[float("-inf")] + list(df["price"][1:])))),
        Case("out of range", "`hour` 31", night, _frame(d, lambda df: df.assign(hour=[31] * 3 + list(df["hour"][3:])))),
        Case("unknown value", "`device` smart-fridge", night,
             _frame(d, lambda df: df.assign(device=["smart-fridge"] * 2 + list(df["device"][2:])))),
        Case("empty day", "a day with zero rows", night, _frame(d, lambda df: df.head(0))),
        Case("too few rows", "40 rows (spec: 1,000 a day)", night, _frame(d, lambda df: df.head(40))),
        Case("missing staging day", "day D-1 absent", night,
             lambda root, work: shutil.rmtree(root / DATASET / "day=2026-01-10") or {}),
        Case("missing day in window", "one training day absent", night,
             lambda root, work: shutil.rmtree(root / DATASET / f"day={d}") or {}),
        Case("day written twice", "a copy of a part file", night,
             lambda root, work: shutil.copyfile(_part(root, d), _part(root, d).with_name("part-0 (copy).parquet")) and {}),
        Case("staging day one class", "every click 0 on the staging day", night,
             _frame("2026-01-10", lambda df: df.assign(click=0))),
        Case("validation day one class", "every click 0 on the validation day", night,
             _frame("2026-01-09", lambda df: df.assign(click=0))),
        Case("spec typo", "`freq_treshold` in a --spec file", ["run", "--spec", "{work}/typo.yaml", *night[1:]],
             _spec_typo),
        Case("unknown dataset", "--dataset nope", [*night, "--dataset", "nope"]),
        Case("unknown architecture", "--arch widee", ["run", "--date", "2026-01-11", "--arch", "widee"]),
        Case("bad --date", "2026-13-45", ["run", "--date", "2026-13-45"]),
        Case("bad --epochs", "0", [*night[:-1], "0"]),
        Case("bad --approval", "sometimes", [*night, "--approval", "sometimes"]),
        Case("--json into a missing folder", "", [*night, "--json", "{work}/nope/out.json"]),
        Case("RECLOOP_HOME under a file", "", night, _home_under_file),
        Case("read-only RECLOOP_HOME", "/sys/kernel", night, lambda root, work: {"RECLOOP_HOME": "/sys/kernel"}),
        Case("dead tracking server", "nothing listens on the port", night, _dead_tracking),
        Case("backfill", "a date inside the champion's window", ["run", "--date", "2026-01-09", "--arch", "wide"]),
        Case("re-run of the champion's night", "same data, code, config",
             ["run", "--date", FIRST_NIGHT, "--arch", "wide", "--epochs", "2"]),
        Case("night while another holds the lock", "RECLOOP_LOCK_WAIT_S=5", night, _hold_lock(home)),
        # Faults: the process SIGKILLs itself at a named point; `then` repairs.
        Case("kill during training", "RECLOOP_FAULT=after_first_epoch", night, fault="after_first_epoch",
             then=["doctor"]),
        Case("kill after registration", "RECLOOP_FAULT=after_version_created", night,
             fault="after_version_created", then=["doctor"], changes_registry=True),
        Case("kill during the dry run", "RECLOOP_FAULT=during_dry_run", night,
             fault="during_dry_run", then=["doctor"], changes_registry=True),
        Case("kill before the alias moves", "RECLOOP_FAULT=before_champion_alias", night,
             fault="before_champion_alias", then=["doctor"], changes_registry=True),
        Case("kill after the alias moved", "RECLOOP_FAULT=after_champion_alias",
             ["run", "--date", "2026-01-11", "--arch", "wide", "--epochs", "2", "--force"],
             fault="after_champion_alias", then=["doctor"], changes_registry=True),
        Case("broken champion", "its model.pt deleted", ["run", "--date", "2026-01-12", "--arch", "wide", "--epochs", "2"],
             _delete_champion_weights(home), changes_registry=True),
    ]


def _state(home: Path) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    name = f"{DATASET}-ranker"
    try:
        champion = str(client.get_model_version_by_alias(name, "champion").version)
    except Exception:
        champion = None
    try:
        challenger = str(client.get_model_version_by_alias(name, "challenger").version)
    except Exception:
        challenger = None
    exp = client.get_experiment_by_name(DATASET)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    versions = client.search_model_versions(f"name='{name}'")
    torn = [f"v{v.version} has a champion.intent" for v in versions if "champion.intent" in v.tags]
    torn += [f"v{v.version} has no gate result" for v in versions if "gate.verdict" not in v.tags]
    torn += [f"v{v.version} has a dry run pending" for v in versions if v.tags.get("dryrun.result") == "pending"]
    if champion is not None and champion == challenger:
        torn.append(f"champion and challenger on v{champion}")
    return {"champion": champion, "versions": len(versions), "runs": len(runs), "torn": torn,
            "bad_runs": sorted({r.info.status for r in runs} & {"FAILED", "RUNNING"})}


def _first_line(res: subprocess.CompletedProcess) -> str:
    for stream in (res.stderr, res.stdout):
        lines = [ln for ln in stream.splitlines() if ln.strip() and "|" not in ln[:20] and not ln.startswith(" ")]
        for ln in lines:
            if ln.startswith("error:") or "nothing to do" in ln or "promoted" in ln or "unchanged" in ln:
                return ln.strip()
    return (res.stderr.strip().splitlines() or res.stdout.strip().splitlines() or [""])[-1].strip()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows-per-day", type=int, default=3000)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from feature_store.generators.synthetic import generate_synthetic
    from flows.local_prefect import prefect_api

    base = Path(tempfile.mkdtemp(prefix="recloop-robustness-"))
    home, clean = base / "home", base / "clean"
    generate_synthetic(clean, start=START, days=12, rows_per_day=args.rows_per_day, seed=7)
    env = {**os.environ, "RECLOOP_HOME": str(home), "RECLOOP_SETTINGS_FILE": str(base / "absent.env"),
           "PREFECT_HOME": str(base / "prefect"), "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore",
           "RECLOOP_DATA_ROOT": str(clean), **GATE}
    for var in ("RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI", "RECLOOP_FAULT", "RECLOOP_APPROVAL_MODE"):
        env.pop(var, None)
    outcomes: list[Outcome] = []
    with prefect_api(base / "logs", echo=print) as api:
        env["PREFECT_API_URL"] = api

        def cli(argv: list[str], extra: dict[str, str]) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "flows.cli", *argv], env={**env, **extra}, cwd=REPO,
                                  capture_output=True, text=True, timeout=900)

        first = cli(["run", "--date", FIRST_NIGHT, "--arch", "wide", "--epochs", "2"], {})
        assert first.returncode == 0 and "promoted v1" in first.stdout, first.stdout + first.stderr
        for case in cases(home):
            if args.only and case.name not in args.only:
                continue
            work = base / "cases" / case.name.replace(" ", "_").replace("/", "_")
            root = work / "data"
            shutil.copytree(clean, root)
            extra = {"RECLOOP_DATA_ROOT": str(root)}
            if case.setup:
                extra |= case.setup(root, work) or {}
            if case.fault:
                extra["RECLOOP_FAULT"] = case.fault
            argv_ = [a.replace("{work}", str(work)) for a in case.argv]
            before = _state(home)
            t0 = time.perf_counter()
            res = cli(argv_, extra)
            out = Outcome(case.name, case.what, "recloop " + " ".join(argv_), res.returncode, _first_line(res))
            mid = _state(home)
            out.registry_unchanged = (mid["champion"], mid["versions"], mid["runs"]) == (
                before["champion"], before["versions"], before["runs"]) and not mid["bad_runs"]
            if case.then:
                fix = cli(case.then, {k: v for k, v in extra.items() if k != "RECLOOP_FAULT"})
                out.then, out.then_exit = "recloop " + " ".join(case.then), fix.returncode
                repairs = [ln.strip() for ln in fix.stdout.splitlines()
                           if ln.strip() and "Prefect server" not in ln]
                out.then_first_line = "; ".join(repairs)
            after = _state(home)
            out.consistent_after = not after["bad_runs"] and not after["torn"]
            out.notes = after["torn"] + [f"{s} runs" for s in after["bad_runs"]]
            out.seconds = round(time.perf_counter() - t0, 1)
            for proc in _HELD:
                proc.kill()
            _HELD.clear()
            outcomes.append(out)
            print(f"{out.name:40s} exit {out.exit_code:3d}  unchanged={out.registry_unchanged}  {out.first_line[:120]}",
                  flush=True)
    result = {"benchmark": "bad input and faults against recloop run", "rows_per_day": args.rows_per_day,
              "load_average": os.getloadavg(), "cases": [asdict(o) for o in outcomes]}
    write_results(args.out, "robustness", result, markdown(result))
    shutil.rmtree(base, ignore_errors=True)
    return result


def markdown(result: dict) -> str:
    lines = ["# Bad input and faults against `recloop run`", "",
             f"Synthetic log, 12 days x {result['rows_per_day']} rows, a `wide` champion; each case in its own "
             "process; a relaxed gate, so every night reaches registration. *Unchanged*: champion, version "
             "count and run count as before the case, and no FAILED or RUNNING run. *Consistent after*: once "
             "the repair command ran, no FAILED or RUNNING run, no interrupted champion move, no version without "
             "a gate result or with its dry run pending, champion and challenger not on one version.", "",
             "| case | exit | first line | registry unchanged | repair | consistent after |", "|---|---|---|---|---|---|"]
    for c in result["cases"]:
        first = c["first_line"].replace("|", "/")
        if len(first) > 220:
            first = first[:217] + "..."
        repair = f"`{c['then']}` -> {c['then_exit']}: {c['then_first_line']}" if c["then"] else ""
        lines.append(f"| {c['name']} ({c['what']}) | {c['exit_code']} | {first} | "
                     f"{'y' if c['registry_unchanged'] else 'n'} | {repair.replace('|', '/')} | "
                     f"{'y' if c['consistent_after'] else 'n'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    json.dumps(main())
