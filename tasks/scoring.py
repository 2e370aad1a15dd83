"""MLflow's scoring protocol with a fast path for the common request: the app `recloop serve` runs.

MLflow's own app (`mlflow.pyfunc.scoring_server.init(model)`) answered a 1-row request for this
project's ranker in ~10 ms p50, most of it MLflow's per-request data handling, not the model or
the web framework (benchmarks/results/serve_latency.md): `pd.DataFrame(data)` from the JSON rows,
the signature's casts twice (while parsing, again in `PyFuncModel.predict`), and the answer
written by json's pure-Python encoder. `app(model)` answers a `POST /invocations` whose body is
the plain case:

- `Content-Type: application/json` (optionally `; charset=utf-8`);
- a JSON object with one key, `dataframe_split` (`columns` + `data`, no `index`) or
  `dataframe_records`, holding exactly the signature's columns (any order, at least one row);
- every value of the type MLflow would leave as it is: `str` or null for a string column,
  `int` for a long column, `int`, `float` or null for a double column;
- a model whose signature has named columns of only those three types;

and builds the frame MLflow's parse + schema enforcement would have built (same columns, order,
dtypes, values: tests/integration/test_scoring.py checks it against MLflow's functions), calls
the same pyfunc implementation (`PyFuncModel._model_impl.predict`, what `PyFuncModel.predict`
calls after enforcing the schema) and writes the same bytes (`json.dumps`, as MLflow's
`predictions_to_json` does, for a float array).

Everything else goes to MLflow's own app, unchanged, with the body replayed: other routes
(`/ping`, `/health`, `/version`, 404/405), CSV and parquet bodies, `instances`/`inputs`,
`params`, values MLflow would cast (e.g. "3" for a long), nulls in a long column, bad JSON,
missing columns, and any request whose fast path raises (e.g. the model rejects it), so every
error response, status code and odd case is MLflow's by construction. Fast-path requests are
scored on the event loop (one worker, one torch thread: they run one at a time either way), so
MLflow's per-request timeout (`MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT`) applies only to the
requests that go to its app.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON_TYPES = (b"application/json", b"application/json; charset=utf-8")
_HEADERS = [(b"content-type", b"application/json")]
_NONE = type(None)
# signature type -> (numpy dtype, the JSON value types MLflow passes through unchanged)
_COLUMN_TYPES = {
    "string": (object, frozenset({str, _NONE})),
    "long": (np.int64, frozenset({int})),
    "double": (np.float64, frozenset({int, float, _NONE})),
}


class FastFrame:
    """The signature's columns, read straight from a plain JSON request (None: not plain)."""

    def __init__(self, names: Sequence[str], types: Sequence[str]):
        self.names = list(names)
        self.kinds = [_COLUMN_TYPES[t] for t in types]
        self.position = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def for_model(cls, model: Any) -> FastFrame | None:
        """None when the model's signature is not named columns of string/long/double."""
        schema = model.metadata.get_input_schema()
        if schema is None or not schema.has_input_names() or model.metadata.get_params_schema() is not None:
            return None
        for private in ("_is_signature_from_type_hint", "_is_type_hint_from_example"):
            if getattr(model.metadata, private, lambda: True)():  # then MLflow converts the input
                return None
        types = []
        for spec in schema.inputs:
            name = getattr(getattr(spec, "type", None), "name", None)
            if name not in _COLUMN_TYPES or not getattr(spec, "required", True):
                return None
            types.append(name)
        names = schema.input_names()
        return cls(names, types) if len(set(names)) == len(names) else None

    def parse(self, body: bytes) -> pd.DataFrame | None:
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        if type(request) is not dict or len(request) != 1:
            return None
        if "dataframe_split" in request:
            split = request["dataframe_split"]
            if type(split) is not dict or split.keys() != {"columns", "data"}:
                return None
            return self._from_split(split["columns"], split["data"])
        if "dataframe_records" in request:
            return self._from_records(request["dataframe_records"])
        return None

    def _from_split(self, columns: Any, data: Any) -> pd.DataFrame | None:
        n = len(self.names)
        if type(columns) is not list or len(columns) != n or type(data) is not list or not data:
            return None
        order = [self.position.get(c) if type(c) is str else None for c in columns]
        if None in order or len(set(order)) != n:
            return None
        if any(type(row) is not list or len(row) != n for row in data):
            return None
        values = list(zip(*data))  # one tuple per request column
        return self._frame([values[order.index(i)] for i in range(n)])

    def _from_records(self, records: Any) -> pd.DataFrame | None:
        if type(records) is not list or not records:
            return None
        names = self.position.keys()
        if any(type(r) is not dict or r.keys() != names for r in records):
            return None
        return self._frame([[r[name] for r in records] for name in self.names])

    def _frame(self, columns: list[Sequence[Any]]) -> pd.DataFrame | None:
        arrays = {}
        for name, (dtype, allowed), values in zip(self.names, self.kinds, columns):
            if not set(map(type, values)) <= allowed:
                return None
            try:
                arrays[name] = np.array(values, dtype=dtype)
            except OverflowError:  # an int beyond int64: MLflow's cast decides
                return None
        return pd.DataFrame(arrays, copy=False)


def _answer(predictions: Any) -> bytes | None:
    """MLflow's `predictions_to_json` bytes for a float array (None: let MLflow write it)."""
    if isinstance(predictions, np.ndarray) and predictions.dtype.kind == "f" and predictions.ndim == 1:
        return json.dumps({"predictions": predictions.tolist()}).encode()
    return None


def app(model: Any) -> ASGIApp:
    """An ASGI app for the pyfunc `model`: the fast path above, MLflow's app for the rest."""
    from mlflow.pyfunc import scoring_server

    mlflow_app = scoring_server.init(model)
    fast = FastFrame.for_model(model)
    impl = model._model_impl  # a stable developer API: what PyFuncModel.predict calls
    params = inspect.signature(impl.predict).parameters.get("params")
    takes_params = params is not None and params.kind != inspect.Parameter.VAR_KEYWORD

    def predict(frame: pd.DataFrame) -> Any:
        return impl.predict(frame, params=None) if takes_params else impl.predict(frame)

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if (fast is None or scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"] != "/invocations"):
            await mlflow_app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        answer = None
        if dict(scope["headers"]).get(b"content-type") in _JSON_TYPES:
            try:
                frame = fast.parse(body)
                if frame is not None:
                    answer = _answer(predict(frame))
            except Exception:  # MLflow's app answers it (and says what is wrong) below
                answer = None
        if answer is not None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(answer)).encode()), *_HEADERS]})
            await send({"type": "http.response.body", "body": answer})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await mlflow_app(scope, replay, send)

    return serve
