"""The scale benchmark's pieces: the process-tree memory sampler sees a child's allocation,
and the Criteo-format writer writes what the importer reads."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from benchmarks.proctree import TreeSampler, tree_rss, wait_sampled
from feature_store.datasets import criteo
from feature_store.partitions import available_days, read_days

_CHILD = """
import sys, time
import numpy as np
block = np.ones(200 * 2**20, dtype=np.uint8)  # 200 MiB, touched
print("ready", flush=True)
time.sleep(float(sys.argv[1]))
"""


def test_sampler_sees_a_grandchild_allocating_200_mb() -> None:
    # The allocating process is a grandchild (as Dask workers under a night are).
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys; subprocess.run([sys.executable, '-c', {_CHILD!r}, '1.5'])"])
    before = tree_rss(parent.pid)
    code, _, peak_mb = wait_sampled(parent, interval=0.1)
    assert code == 0 and parent.returncode == 0  # waited for the tree to end
    assert peak_mb > 200 > before / 2**20
    assert tree_rss(parent.pid) == 0  # gone


def test_sampler_sums_several_trees() -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, "1.0"], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    with TreeSampler([p.pid for p in procs], interval=0.1) as sampler:
        time.sleep(0.3)
    for proc in procs:
        proc.wait()
    assert sampler.samples >= 2 and sampler.peak_mb > 400


def test_criteo_like_file_is_what_the_importer_reads(tmp_path: Path) -> None:
    path = criteo.write_criteo_like(tmp_path / "train.txt", 5_000, seed=3, chunk_lines=1_500)
    lines = path.read_text().split("\n")
    assert lines[-1] == "" and len(lines) == 5_001  # one impression a line, newline-terminated
    fields = [line.split("\t") for line in lines[:-1]]
    assert {len(f) for f in fields} == {criteo.FIELDS}
    assert {f[0] for f in fields} == {"0", "1"}
    assert any(f[1] == "" for f in fields) and any(f[-1] == "" for f in fields)  # empty fields
    assert all(len(v) == 8 for f in fields for v in f[14:] if v)  # 8 hex digits
    summary = criteo.import_criteo(path, tmp_path / "data", date(2014, 5, 1), rows_per_day=2_000,
                                   chunk_lines=1_000, part_rows=1_500)
    assert list(summary.days.values()) == [2_000, 2_000, 1_000]
    frame = read_days(tmp_path / "data", "criteo", available_days(tmp_path / "data", "criteo"))
    assert frame["label"].tolist() == [int(f[0]) for f in fields]
    assert 0.1 < frame["label"].mean() < 0.45
    assert frame["I2"].min() < 0 and frame["I12"].isna().mean() > 0.5
    ints = np.array([[float(v) if v else np.nan for v in f[1:14]] for f in fields])
    np.testing.assert_array_equal(frame[criteo.INT_COLUMNS].to_numpy(), ints)
    assert frame["C1"].tolist() == [f[14] or None for f in fields]
    assert len(list((tmp_path / "data" / "criteo" / "day=2014-05-01").glob("part-*.parquet"))) == 2
    again = criteo.write_criteo_like(tmp_path / "again.txt", 5_000, seed=3, chunk_lines=1_500)
    assert again.read_bytes() == path.read_bytes()
