"""Quality and speed benchmarks (JSON + markdown in benchmarks/results/)."""

import flows  # noqa: F401  (sets torch's OpenMP spin count before torch is imported; see flows/__init__.py)
