"""The model bundle: one MLflow pyfunc model per candidate, holding the fitted NVTabular
workflow, the dataset spec, the architecture + hyper-parameters and the torch weights.

`predict(raw_dataframe) -> click probability`, so a champion is always scored with its own
preprocessing and `mlflow models serve` works on raw rows.
"""

from __future__ import annotations

import functools
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
        arrays = self.preprocessor.transform(model_input[self.spec.feature_columns])
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
        )
    return info.model_uri

