"""Where every benchmark puts its results: `<out>/<stem>.json` and `<out>/<stem>.md`."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(out: Path, stem: str, result: dict, markdown: str) -> None:
    """Write the JSON and the markdown table, and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str))
    (out / f"{stem}.md").write_text(markdown)
    print(markdown)
