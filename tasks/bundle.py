"""The model bundle: one MLflow pyfunc model per candidate, holding the fitted NVTabular
workflow, the dataset spec, the architecture + hyper-parameters and the torch weights.

`predict(raw_dataframe) -> click probability`, so a champion is always scored with its own
preprocessing and `mlflow models serve` works on raw rows.

The bundle carries the project code it imports (MLflow `code_paths`, see `bundle_code`):
`feature_store/`, `models/` and of `tasks/` only this module and `tasks/features.py`, none
of which imports Prefect. So a bundle loads and scores in a process that has neither the
checkout nor the recloop package, e.g. `mlflow models serve --env-manager local`. MLflow puts
the shipped code at the front of `sys.path` when it loads the bundle; in a process that has
already imported the project (a night's gate), the imported modules are the ones used.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

MODEL_NAME_IN_RUN = "model"

# What the bundle imports at load time. Declared, not inferred: MLflow's inference loads the
# model in a subprocess and costs ~12 s per logged model.
_BUNDLE_PACKAGES = ("nvtabular", "merlin-core", "torch", "numpy", "pandas", "pyarrow", "dask",
                    "distributed", "mlflow", "pydantic", "PyYAML", "cloudpickle")


# The project code a bundle imports when it loads and predicts (packages whole, `tasks` only
# these modules: the rest of it imports Prefect).
_CODE_PACKAGES = ("feature_store", "models")
_CODE_MODULES = {"tasks": ("__init__.py", "bundle.py", "features.py", "retriever_bundle.py")}


def bundle_code(out: Path) -> list[str]:
    """Copy the code the bundle needs into `out` (Python files and the dataset specs: no caches,
    no data); returns the package directories to pass as `code_paths`. MLflow puts them first on
    `sys.path`, so in a process that loads a bundle first they are the `feature_store` it imports:
    they must be whole enough to serve as it (the specs, for `load_spec`)."""
    root = Path(__file__).resolve().parent.parent
    out.mkdir(parents=True, exist_ok=True)

    def not_code(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__"
                or (not n.endswith((".py", ".yaml")) and not (Path(directory) / n).is_dir())]

    for package in _CODE_PACKAGES:
        shutil.copytree(root / package, out / package, ignore=not_code)
    for package, modules in _CODE_MODULES.items():
        (out / package).mkdir()
        for module in modules:
            shutil.copy2(root / package / module, out / package / module)
    return [str(out / p) for p in (*_CODE_PACKAGES, *_CODE_MODULES)]


@functools.lru_cache(maxsize=1)
def bundle_requirements() -> list[str]:
    """Pinned versions of the bundle's runtime packages, as installed here."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in _BUNDLE_PACKAGES]


class RankerBundle(mlflow.pyfunc.PythonModel):
    """Raw rows in, click probabilities out: transform with the saved workflow, then score."""

    def load_context(self, context: Any) -> None:
        from feature_store.spec import load_spec
        from feature_store.workflow import Preprocessor
        from models import load_checkpoint

        self.spec = load_spec(context.artifacts["spec"])
        self.preprocessor = Preprocessor.load(context.artifacts["preprocessor"])
        self.model = load_checkpoint(context.artifacts["model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        from models.trainer import predict_proba
        from tasks.features import to_batch

        missing = [c for c in self.spec.feature_columns if c not in model_input.columns]
        if missing:
            raise ValueError(f"input rows lack feature columns {missing} required by dataset '{self.spec.name}'")
        arrays = self.preprocessor.transform(model_input)  # reads only the feature columns
        return predict_proba(self.model, to_batch(arrays))


def log_bundle(model, preprocessor, spec, example_rows: pd.DataFrame) -> str:
    """Log the bundle into the active MLflow run; returns the model URI."""
    from feature_store.spec import spec_to_yaml
    from models import save_checkpoint
    from models.trainer import predict_proba
    from tasks.features import to_batch

    with tempfile.TemporaryDirectory(prefix="recloop-bundle-") as tmp:
        tmp_path = Path(tmp)
        preprocessor.save(tmp_path / "preprocessor")
        save_checkpoint(tmp_path / "model.pt", model)
        (tmp_path / "spec.yaml").write_text(spec_to_yaml(spec))
        example = example_rows[spec.feature_columns].head(5).reset_index(drop=True)
        # The signature's output side from the in-memory model; MLflow's own input-example
        # check then loads the logged bundle and predicts with it.
        signature = infer_signature(example, predict_proba(model, to_batch(preprocessor.transform(example))))
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=RankerBundle(),
            artifacts={
                "preprocessor": str(tmp_path / "preprocessor"),
                "model": str(tmp_path / "model.pt"),
                "spec": str(tmp_path / "spec.yaml"),
            },
            signature=signature,
            input_example=example,
            pip_requirements=bundle_requirements(),
            code_paths=bundle_code(tmp_path / "code"),
        )
    return info.model_uri

