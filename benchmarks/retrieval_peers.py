"""The peers of `make bench-retrieval`: RecBole 1.2.1 and implicit 0.7.3, each model in its own
process, fed the benchmark's split (benchmarks/retrieval_data.py).

Install (`ensure_peers`): `pip install --no-deps --target $RECLOOP_HOME/bench-site-retrieval`
of exactly `PEER_PACKAGES`, never into the project venv. Against the venv (torch 2.13 CPU,
numpy 1.24.4, pandas 1.5.3, scipy 1.15, scikit-learn, tqdm, pyyaml, psutil, tabulate,
colorama, threadpoolctl present):
  * recbole 1.2.1 declares torch, numpy, scipy, pandas, tqdm, colorlog==4.7.2, colorama==0.4.4,
    scikit-learn, pyyaml, tensorboard, thop, tabulate, plotly, texttable, psutil, ray<=2.6.3.
    What importing its config/data/trainer and the Pop/ItemKNN/BPR/LightGCN models needs and
    the venv lacks: colorlog (recbole.utils.logger) and texttable (recbole.utils.utils): both
    installed, pure Python. tensorboard: `torch.utils.tensorboard` is stubbed in the worker
    (a no-op SummaryWriter). ray (recbole.quick_start), thop (get_flops), plotly and hyperopt
    (hyper_tuning): never imported, because the worker does not use quick_start.
    colorama: the venv's 0.4.6 instead of the pinned 0.4.4 (colorlog uses it on Windows only).
  * implicit 0.7.3 (CPU wheel, built against the numpy 1.x ABI: imports on numpy 1.24) needs
    numpy, scipy, tqdm, threadpoolctl: all in the venv.
The worker (benchmarks/retrieval_peer_worker.py) runs with the venv's python, the site dir
appended to sys.path, and OMP/MKL/OpenBLAS threads = the benchmark's threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.retrieval_data import RetrievalSplit

RECBOLE_VERSION = "1.2.1"
IMPLICIT_VERSION = "0.7.3"
PEER_PACKAGES = (f"recbole=={RECBOLE_VERSION}", f"implicit=={IMPLICIT_VERSION}", "colorlog==4.7.2",
                 "texttable==1.7.2")
SITE_DIR_NAME = "bench-site-retrieval"
WORKER = Path(__file__).with_name("retrieval_peer_worker.py")


@dataclass(frozen=True)
class PeerSpec:
    """One peer model: recloop's name for it, the library and its class, the settings we change.

    `config` holds only what differs from the peer's documented defaults (RecBole's
    properties/model/<Model>.yaml + overall.yaml; implicit's constructor defaults).
    """

    model: str  # recloop's retriever name: popularity, item_knn, mf, lightgcn
    peer: str  # "recbole" | "implicit"
    peer_model: str  # RecBole model name or implicit class name
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return {"recbole": RECBOLE_VERSION, "implicit": IMPLICIT_VERSION}[self.peer]

    @property
    def key(self) -> str:
        return f"{self.peer}:{self.peer_model}"


# RecBole: its defaults everywhere (embedding 64 for BPR and LightGCN is already its default;
# 300 epochs at most, early stopping after 10 epochs without a better valid MRR@10, the best
# epoch's weights restored; Adam lr 1e-3, batch 2048, one uniform negative per positive).
# implicit: its defaults, except BPR's factors 100 -> 64 (the shared embedding budget; implicit
# adds one column for the item bias); 100 iterations, no early stopping (it has none).
PEERS: tuple[PeerSpec, ...] = (
    PeerSpec("popularity", "recbole", "Pop"),
    PeerSpec("item_knn", "recbole", "ItemKNN"),
    PeerSpec("mf", "recbole", "BPR"),
    PeerSpec("lightgcn", "recbole", "LightGCN"),
    PeerSpec("item_knn", "implicit", "CosineRecommender"),
    PeerSpec("mf", "implicit", "BayesianPersonalizedRanking", {"factors": 64}),
)


@dataclass(frozen=True)
class PeerRun:
    """What one peer produced: ranked top-K per test user plus its own timings."""

    spec: PeerSpec
    implementation: str  # e.g. "recbole 1.2.1"
    users: np.ndarray  # (U,) dense test users, ascending
    topk: np.ndarray  # (U, kmax) dense item ids, -1 padded
    train_seconds: float
    retrieval_seconds: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    details: dict[str, Any]  # the worker's result.json (own metrics, epochs, hyper-parameters)


def site_dir() -> Path:
    home = os.environ.get("RECLOOP_HOME") or str(Path(".recloop").resolve())
    return Path(home) / SITE_DIR_NAME


def ensure_peers(site: Path) -> Path:
    """Install `PEER_PACKAGES` (no dependencies) into `site` unless they are all there."""
    wanted = [p.split("==") for p in PEER_PACKAGES]
    missing = [f"{n}=={v}" for n, v in wanted if not list(site.glob(f"{n}-{v}.dist-info"))]
    if missing:
        print(f"installing {' '.join(missing)} into {site} (--no-deps, benchmark only)")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--target", str(site), *missing], check=True)
    return site


def write_split(split: RetrievalSplit, path: Path) -> Path:
    np.savez(path, train=split.train, valid=split.valid, test=split.test,
             n_users=split.n_users, n_items=split.n_items)
    return path


def run_peer(spec: PeerSpec, split_npz: Path, site: Path, workdir: Path, *, threads: int, seed: int,
             kmax: int, max_epochs: int | None = None) -> PeerRun:
    """Fit and rank with one peer in a fresh `python retrieval_peer_worker.py` process."""
    out = Path(tempfile.mkdtemp(prefix=f"{spec.peer}-{spec.peer_model}-", dir=workdir))
    config = dict(spec.config)
    if max_epochs is not None and spec.peer == "recbole":
        config["epochs"] = max_epochs
    if max_epochs is not None and spec.peer_model == "BayesianPersonalizedRanking":
        config["iterations"] = max_epochs
    job = {"peer": spec.peer, "model": spec.peer_model, "config": config, "site": str(site),
           "split": str(split_npz), "out": str(out), "threads": threads, "seed": seed, "kmax": kmax}
    (out / "job.json").write_text(json.dumps(job, indent=2))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the worker needs no recloop
    env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    load_before = os.getloadavg()
    with (out / "worker.log").open("w") as log:
        proc = subprocess.run([sys.executable, str(WORKER), str(out / "job.json")], cwd=out, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    load_after = os.getloadavg()
    if proc.returncode != 0:
        tail = (out / "worker.log").read_text().splitlines()[-30:]
        raise RuntimeError(f"{spec.key} failed (exit {proc.returncode}); log {out / 'worker.log'}:\n"
                           + "\n".join(tail))
    details = json.loads((out / "result.json").read_text())
    with np.load(out / "topk.npz") as f:
        users, topk = f["users"], f["topk"]
    return PeerRun(spec=spec, implementation=f"{spec.peer} {details['version']}", users=users, topk=topk,
                   train_seconds=float(details["train_seconds"]),
                   retrieval_seconds=float(details["retrieval_seconds"]),
                   load_before=load_before, load_after=load_after, details=details)
