"""The fitted NVTabular workflow compiled into plain numpy/pandas steps.

Running a fitted workflow through merlin's executor costs more than the transform itself:
every node copies and concatenates the columns it passes on (about 30% of the streamed
transform's time) and a one-row request pays ~80 ms of graph overhead (NVTabular issue 1866).
`CompiledTransform.compile(workflow)` walks the fitted graph once and turns it into a list of
steps over numbered slots, each step one vectorised kernel over whole columns:

    FastCategorify      vocabulary lookup (`Index.get_indexer`; a dict up to 1,024 rows),
                        1 null, 2 out-of-vocabulary
    StableHashBucket    value hash modulo the bucket count
    StableHashedCross   row hash of the crossed columns modulo the bucket count
    ContinuousChain     fill, clip, log1p, standardize
    DomainBucketize     `np.digitize` on the boundaries
    Rename, selections and concatenations only rename or route slots

The kernels call the same hashing and lookup functions as the ops (so the ids are the same by
construction), and the tests check the compiled output against the workflow's on every spec
in the repo with random rows, unseen values, nulls and out-of-range numbers. A workflow with
any other op (e.g. NVTabular's own Categorify, or one saved by an older recloop) does not
compile: `Unsupported` names the op and the caller runs the workflow itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from merlin.dag import ColumnSelector
from merlin.dag.ops.concat_columns import ConcatColumns
from merlin.dag.ops.selection import SelectionOp
from nvtabular import ops

from feature_store.categorify import FastCategorify, Lookup
from feature_store.continuous import ContinuousChain
from feature_store.stable_ops import (
    DomainBucketize,
    StableHashBucket,
    StableHashedCross,
    hash_columns,
    hash_rows,
)

Column = Any  # a pandas Series (raw input) or a numpy array (a computed column)
Kernel = Callable[[list[Column]], list[Column]]


class Unsupported(Exception):
    """The workflow holds an op the compiler has no kernel for."""


@dataclass(frozen=True)
class _Step:
    kernel: Kernel
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _values(column: Column) -> np.ndarray:
    return column.to_numpy() if isinstance(column, pd.Series) else column


def _series(column: Column) -> pd.Series:
    # Raw inputs arrive as the prepared frame's columns (index 0..N-1, like a fresh Series).
    return column if isinstance(column, pd.Series) else pd.Series(column, copy=False)


def _categorify(op: FastCategorify, names: list[str]) -> Kernel:
    lookups = [Lookup(op.vocabs[n]) for n in names]
    return lambda cols: [lookup(_series(c)) for lookup, c in zip(lookups, cols)]


def _hash_bucket(op: StableHashBucket, names: list[str]) -> Kernel:
    buckets, dtype = np.uint64(op.num_buckets), op.output_dtype
    return lambda cols: [(hash_rows(_series(c)) % buckets).astype(dtype) for c in cols]


def _cross(op: StableHashedCross, names: list[str]) -> Kernel:
    buckets, dtype = np.uint64(op.num_buckets), op.output_dtype

    def kernel(cols: list[Column]) -> list[Column]:
        return [(hash_columns(cols) % buckets).astype(dtype)]

    return kernel


def _continuous(op: ContinuousChain, names: list[str]) -> Kernel:
    return lambda cols: [op.apply(n, c) for n, c in zip(names, cols)]


def _bucketize(op: DomainBucketize, names: list[str]) -> Kernel:
    bounds = [np.asarray(op.boundaries(n)) for n in names]
    return lambda cols: [np.digitize(_values(c), b, right=False) for c, b in zip(cols, bounds)]


_KERNELS: dict[type, Callable[[Any, list[str]], Kernel]] = {
    FastCategorify: _categorify,
    StableHashBucket: _hash_bucket,
    StableHashedCross: _cross,
    ContinuousChain: _continuous,
    DomainBucketize: _bucketize,
}


class CompiledTransform:
    """A fitted workflow as steps over slots: raw input columns in, output columns out."""

    def __init__(self, steps: list[_Step], inputs: dict[str, int], outputs: dict[str, int], slots: int):
        self.steps = steps
        self.inputs = inputs  # raw column name -> slot
        self.outputs = outputs  # output column name -> slot
        self.slots = slots

    @classmethod
    def compile(cls, workflow: Any) -> CompiledTransform:
        """Compile a *fitted* workflow; raises `Unsupported` naming an op without a kernel."""
        builder = _Builder()
        outputs = builder.visit(workflow.output_node)
        return cls(builder.steps, builder.inputs, outputs, builder.slots)

    def __call__(self, frame: pd.DataFrame) -> dict[str, Column]:
        """Output column -> values for the rows of `frame` (which holds every input column)."""
        env: list[Column] = [None] * self.slots
        for name, slot in self.inputs.items():
            env[slot] = frame[name]
        for step in self.steps:
            results = step.kernel([env[i] for i in step.inputs])
            for slot, values in zip(step.outputs, results):
                env[slot] = values
        return {name: env[slot] for name, slot in self.outputs.items()}


class _Builder:
    """Walks the graph from the output node; every node's outputs get fresh slots, since names
    are local to an edge (`age` is the raw age, its filled value and its standardized value)."""

    def __init__(self) -> None:
        self.steps: list[_Step] = []
        self.inputs: dict[str, int] = {}
        self.slots = 0
        self._seen: dict[int, dict[str, int]] = {}

    def _new(self) -> int:
        self.slots += 1
        return self.slots - 1

    def _raw(self, name: str) -> int:
        if name not in self.inputs:
            self.inputs[name] = self._new()
        return self.inputs[name]

    def visit(self, node: Any) -> dict[str, int]:
        if id(node) in self._seen:
            return self._seen[id(node)]
        env: dict[str, int] = {}
        for parent in node.parents_with_dependencies:
            env.update(self.visit(parent))
        names = list(node.input_columns.names)
        slots = {n: env[n] if n in env else self._raw(n) for n in names}
        op = node.op
        if isinstance(op, (SelectionOp, ConcatColumns)):
            out = {n: slots[n] if n in slots else env[n] for n in node.output_columns.names}
        elif isinstance(op, ops.Rename):
            mapping = op.column_mapping(ColumnSelector(names))
            out = {new: slots[old[0]] for new, old in mapping.items()}
        elif type(op) in _KERNELS:
            out = {n: self._new() for n in node.output_columns.names}
            kernel = _KERNELS[type(op)](op, names)
            self.steps.append(_Step(kernel, tuple(slots[n] for n in names), tuple(out.values())))
        else:
            raise Unsupported(f"no compiled kernel for {type(op).__name__} (columns {names})")
        self._seen[id(node)] = out
        return out
