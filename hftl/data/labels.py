"""Label maps: class names <-> ids, stable across runs and saved with the model."""

from __future__ import annotations

from dataclasses import dataclass

from hftl.errors import DataError


@dataclass(frozen=True)
class LabelMap:
    """The classes of a classification task, in id order.

    Ids follow sorted order (numbers numerically, strings alphabetically), so the same data always
    gives the same map. Names are strings, as in a transformers config's `id2label`.
    """

    names: tuple[str, ...]

    @classmethod
    def from_values(cls, values, source: str = "train") -> "LabelMap":
        distinct = set(values)
        if None in distinct:
            raise DataError(f"{source}: some rows have no label. Fill them in or drop those rows.")
        if len(distinct) < 2:
            raise DataError(
                f"{source}: only one class ({next(iter(distinct), 'none')!r}) in the training labels; "
                "classification needs at least two."
            )
        numeric = all(isinstance(v, int) and not isinstance(v, bool) for v in distinct)
        return cls(tuple(str(v) for v in sorted(distinct, key=(None if numeric else str))))

    @classmethod
    def from_model_config(cls, config) -> "LabelMap":
        return cls(tuple(config.id2label[i] for i in range(len(config.id2label))))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, values, source: str) -> list[int]:
        """Ids of `values`; an unknown label is an error naming the source, the row and the value."""
        label2id = self.label2id
        ids = []
        for row, value in enumerate(values, start=1):
            key = str(value)
            if key not in label2id:
                raise DataError(
                    f"{source}, row {row}: label {value!r} does not occur in the training data "
                    f"(known labels: {', '.join(self.names)}). Fix the label, or add examples of it to train."
                )
            ids.append(label2id[key])
        return ids
