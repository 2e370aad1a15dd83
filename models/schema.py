"""The model's view of the fitted preprocessing: which inputs exist and how large they are.

Built from the fitted NVTabular workflow's output layout (see `feature_store.workflow`),
never typed by hand, and stored inside every checkpoint so a model can be rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """One integer-id input: a categorical column or a hashed feature cross."""

    name: str
    cardinality: int


@dataclass(frozen=True)
class InputSchema:
    """Inputs of every architecture.

    A batch is a dict of tensors:
      "cat"   int64   (B, len(categorical))  ids in [0, cardinality) per field
      "cont"  float32 (B, len(continuous))
      "cross" int64   (B, len(crosses))      ids in [0, cardinality) per cross
      "label" float32 (B,)                   only when training / evaluating
    User and item fields name the categorical columns that describe the user and the item
    (used by architectures with towers); they may be empty.
    """

    categorical: tuple[Field, ...]
    continuous: tuple[str, ...]
    crosses: tuple[Field, ...] = ()
    user_fields: tuple[str, ...] = ()
    item_fields: tuple[str, ...] = ()

    @classmethod
    def from_layout(cls, layout: dict[str, Any]) -> InputSchema:
        """Build from the plain-dict layout written by the fitted preprocessor."""
        return cls(
            categorical=tuple(Field(f["name"], int(f["cardinality"])) for f in layout["categorical"]),
            continuous=tuple(layout["continuous"]),
            crosses=tuple(Field(f["name"], int(f["cardinality"])) for f in layout.get("crosses", [])),
            user_fields=tuple(layout.get("user_fields", [])),
            item_fields=tuple(layout.get("item_fields", [])),
        )

    def categorical_indices(self, names: tuple[str, ...]) -> tuple[int, ...]:
        """Positions in "cat" of the categorical fields `names`; ValueError on an unknown name."""
        known = [f.name for f in self.categorical]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown categorical field(s) {unknown}; categorical fields: {known}")
        return tuple(known.index(n) for n in names)

    def to_layout(self) -> dict[str, Any]:
        return {
            "categorical": [{"name": f.name, "cardinality": f.cardinality} for f in self.categorical],
            "continuous": list(self.continuous),
            "crosses": [{"name": f.name, "cardinality": f.cardinality} for f in self.crosses],
            "user_fields": list(self.user_fields),
            "item_fields": list(self.item_fields),
        }
