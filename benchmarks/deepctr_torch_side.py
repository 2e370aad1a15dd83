"""The DeepCTR-Torch side of `benchmarks.deepctr_compare`: install it outside the project
venv, import it without its network call, map recloop's prepared tensors onto its feature
columns, and train with recloop's protocol (best-epoch restore on validation logloss).

DeepCTR-Torch 0.3.0 (PyPI `deepctr-torch`) is installed by `ensure_deepctr_torch` with
`pip install --no-deps --target <RECLOOP_HOME>/bench-site` (its dependencies torch,
scikit-learn and tqdm are in the venv) and put on `sys.path` by this process only.

What 0.3.0 needs here, with torch 2.13 / numpy 1.24 / pandas 1.5.3:
  * `import deepctr_torch` starts a thread that asks pypi.python.org for the latest
    version (`deepctr_torch.utils.check_version`); a stub `deepctr_torch.utils` module
    with a no-op `check_version` is registered before the import, so nothing phones home.
  * The wheel also installs a top-level `tests` package; the site dir is appended to
    `sys.path` (not prepended) so it cannot shadow the repository's `tests`.
  * `BaseModel.fit` sets train mode once before the first epoch, and its validation
    (`evaluate` -> `predict`) switches the model to eval mode without switching back: with
    `validation_data`, dropout is off from epoch 2 on. We do not pass `validation_data`;
    `EpochValidation` validates after each epoch and puts the model back in train mode.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import subprocess
import sys
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.metrics import log_loss, roc_auc
from models.schema import InputSchema

DEEPCTR_TORCH_VERSION = "0.3.0"
DEEPCTR_CLASSES = {"wide_deep": "WDL", "deepfm": "DeepFM", "dcn": "DCN"}
PREDICT_BATCH = 8192


def ensure_deepctr_torch(site: Path) -> types.ModuleType:
    """Install deepctr-torch==0.3.0 into `site` when missing, then import it from there."""
    if not list(site.glob(f"deepctr_torch-{DEEPCTR_TORCH_VERSION}.dist-info")):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--target", str(site), f"deepctr-torch=={DEEPCTR_TORCH_VERSION}"],
            check=True,
        )
    if str(site) not in sys.path:
        sys.path.append(str(site))  # appended: the wheel's top-level `tests` must not shadow ours
    no_phone_home = types.ModuleType("deepctr_torch.utils")
    no_phone_home.check_version = lambda version: None
    sys.modules.setdefault("deepctr_torch.utils", no_phone_home)
    module = importlib.import_module("deepctr_torch")
    if module.__version__ != DEEPCTR_TORCH_VERSION:
        raise RuntimeError(f"expected deepctr-torch {DEEPCTR_TORCH_VERSION}, imported "
                           f"{module.__version__} from {module.__file__}")
    importlib.import_module("deepctr_torch.models")
    return module


@dataclass(frozen=True)
class FeatureColumns:
    """recloop's inputs as DeepCTR feature columns, same names and vocabulary sizes."""

    categorical: list[Any]  # SparseFeat per recloop categorical field ("cat")
    crosses: list[Any]  # SparseFeat per hashed cross ("cross")
    continuous: list[Any]  # DenseFeat per continuous column ("cont")

    def for_arch(self, arch: str) -> tuple[list[Any], list[Any]]:
        """(linear_feature_columns, dnn_feature_columns) matching recloop's `arch`.

        wide_deep: recloop's WideLinear sees cat + crosses (no continuous), the deep tower
        cat + continuous. deepfm: recloop's linear term sees cat + crosses + continuous.
        dcn: recloop's DCN has no linear term, so DeepCTR's is left empty; it embeds the
        crosses as extra fields (use_crosses), so DeepCTR's DCN gets them as sparse features.
        """
        deep = self.categorical + self.continuous
        if arch == "wide_deep":
            return self.categorical + self.crosses, deep
        if arch == "deepfm":
            return self.categorical + self.crosses + self.continuous, deep
        if arch == "dcn":
            return [], self.categorical + self.crosses + self.continuous
        raise ValueError(f"no DeepCTR-Torch counterpart for {arch!r}; valid: {sorted(DEEPCTR_CLASSES)}")


def feature_columns(schema: InputSchema, embedding_dim: int) -> FeatureColumns:
    from deepctr_torch.inputs import DenseFeat, SparseFeat

    names = [f.name for f in (*schema.categorical, *schema.crosses)] + list(schema.continuous)
    if len(set(names)) != len(names):
        raise ValueError(f"DeepCTR needs unique input names, got {names}")
    return FeatureColumns(
        categorical=[SparseFeat(f.name, f.cardinality, embedding_dim) for f in schema.categorical],
        crosses=[SparseFeat(f.name, f.cardinality, embedding_dim) for f in schema.crosses],
        continuous=[DenseFeat(name, 1) for name in schema.continuous],
    )


def model_inputs(batch: Mapping[str, torch.Tensor], schema: InputSchema) -> dict[str, np.ndarray]:
    """recloop's whole-split tensors -> DeepCTR's {feature name: column} dict (same values)."""
    inputs: dict[str, np.ndarray] = {}
    for key, fields in (("cat", schema.categorical), ("cross", schema.crosses)):
        for j, f in enumerate(fields):
            inputs[f.name] = batch[key][:, j].numpy()
    for j, name in enumerate(schema.continuous):
        inputs[name] = batch["cont"][:, j].numpy()
    return inputs


def build(arch: str, columns: FeatureColumns, *, hidden: tuple[int, ...], dropout: float,
          n_cross_layers: int, seed: int) -> torch.nn.Module:
    """DeepCTR's model for `arch`, every L2 penalty off (recloop uses none)."""
    from deepctr_torch import models

    linear, dnn = columns.for_arch(arch)
    kwargs: dict[str, Any] = dict(dnn_hidden_units=hidden, dnn_dropout=dropout, dnn_activation="relu",
                                  dnn_use_bn=False, l2_reg_linear=0.0, l2_reg_embedding=0.0, l2_reg_dnn=0.0,
                                  seed=seed, task="binary", device="cpu")
    if arch == "dcn":
        kwargs.update(cross_num=n_cross_layers, cross_parameterization="vector", l2_reg_cross=0.0)
    return getattr(models, DEEPCTR_CLASSES[arch])(linear, dnn, **kwargs)


@dataclass
class EpochValidation:
    """A DeepCTR callback doing what recloop's trainer does after each epoch: validation
    logloss and AUC, best-epoch weights kept, stop after `patience` epochs without a lower
    logloss, the best weights restored at the end. It times itself so that this
    validation can be taken out of the training time."""

    val_inputs: dict[str, np.ndarray]
    val_labels: np.ndarray
    patience: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_logloss: float = float("inf")
    seconds: float = 0.0
    model: Any = None
    _best_state: dict[str, torch.Tensor] | None = None
    _bad_epochs: int = 0

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: Any) -> None:
        pass

    def on_train_begin(self, logs: Any = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        start = time.perf_counter()
        p = predict(self.model, self.val_inputs)
        row = {"epoch": epoch + 1, "train_loss": float((logs or {}).get("loss", float("nan"))),
               "val_logloss": log_loss(self.val_labels, p), "val_auc": roc_auc(self.val_labels, p)}
        self.history.append(row)
        if row["val_logloss"] < self.best_logloss:
            self.best_epoch, self.best_logloss = row["epoch"], row["val_logloss"]
            self._best_state = copy.deepcopy(self.model.state_dict())
            self._bad_epochs = 0
        else:
            self._bad_epochs += 1
            if self._bad_epochs >= self.patience:
                self.model.stop_training = True
        self.model.train()  # DeepCTR's fit loop never switches back after a predict
        self.seconds += time.perf_counter() - start

    def on_train_end(self, logs: Any = None) -> None:
        start = time.perf_counter()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        self.model.eval()
        self.seconds += time.perf_counter() - start


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    train_samples_per_s: float
    train_seconds: float


def fit(model: torch.nn.Module, inputs: dict[str, np.ndarray], labels: np.ndarray,
        validation: EpochValidation, *, lr: float, batch_size: int, epochs: int, seed: int,
        threads: int) -> FitResult:
    """DeepCTR's own `model.fit` (shuffling DataLoader, Adam at `lr` on every parameter).

    Training samples/s = rows x epochs run / (wall time of `fit` - time in `validation`).
    """
    torch.set_num_threads(threads)
    model.compile(torch.optim.Adam(model.parameters(), lr=lr), "binary_crossentropy")
    torch.manual_seed(seed)  # DataLoader shuffling and dropout draw from the global RNG
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # fit prints the device and the row counts
        model.fit(inputs, labels, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True,
                  callbacks=[validation])
    train_seconds = time.perf_counter() - start - validation.seconds
    samples = len(labels) * len(validation.history)
    return FitResult(history=validation.history, best_epoch=validation.best_epoch,
                     train_samples_per_s=samples / train_seconds, train_seconds=train_seconds)


def predict(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Probabilities from DeepCTR's `predict`, float64 (n,), clipped like recloop's."""
    p = model.predict(inputs, batch_size=PREDICT_BATCH).reshape(-1)
    eps = np.finfo(np.float64).eps
    return np.clip(p, eps, 1.0 - eps)
