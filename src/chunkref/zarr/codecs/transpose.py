"""The ``transpose`` array->array codec (v3 core).

``order`` is an explicit permutation: the encoded array is ``chunk.transpose(order)``, so its
shape is ``[shape[order[i]] for i]``.  The old ``"C"`` / ``"F"`` strings are no longer valid and
are rejected (an F layout of a 3-d array is ``[2, 1, 0]``).  The v2 ``order: "F"`` is the same
codec with the reversed permutation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from chunkref.errors import CodecError
from chunkref.zarr.codecs.base import ArrayArrayCodec, ChunkSpec, check_configuration

__all__ = ["TransposeCodec"]


@dataclass(frozen=True, eq=True, repr=False)
class TransposeCodec(ArrayArrayCodec):
    """``{"name": "transpose", "configuration": {"order": [2, 1, 0]}}``."""

    name: ClassVar[str] = "transpose"
    order: tuple[int, ...]

    def __post_init__(self) -> None:
        order = self.order
        if isinstance(order, str):
            raise CodecError(
                f"codec 'transpose': order {order!r} is no longer valid; give an explicit permutation "
                "such as [2, 1, 0]"
            )
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in order):
            raise CodecError(f"codec 'transpose': order must be a list of integers, got {order!r}")
        order = tuple(int(i) for i in order)
        if sorted(order) != list(range(len(order))):
            raise CodecError(f"codec 'transpose': order {list(order)} is not a permutation of 0..{len(order) - 1}")
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "_inverse", tuple(int(i) for i in np.argsort(order)))

    @classmethod
    def from_json(cls, configuration: Mapping[str, Any] | None) -> TransposeCodec:
        conf = check_configuration("transpose", configuration, ("order",), ("order",))
        order = conf["order"]
        if isinstance(order, str) or not isinstance(order, (list, tuple)):
            return cls(order=order)
        return cls(order=tuple(order))

    def configuration(self) -> dict[str, Any]:
        return {"order": list(self.order)}

    def evolve(self, spec: ChunkSpec) -> TransposeCodec:
        if len(self.order) != spec.ndim:
            raise CodecError(
                f"codec 'transpose': order {list(self.order)} has {len(self.order)} entries, the chunk has "
                f"{spec.ndim} dimensions"
            )
        return self

    def resolve(self, spec: ChunkSpec) -> ChunkSpec:
        return ChunkSpec(tuple(spec.shape[i] for i in self.order), spec.dtype, spec.fill_value)

    def encoded_size(self, nbytes: int, spec: ChunkSpec) -> int | None:
        return nbytes

    def encode(self, array: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        # A view: the array->bytes codec makes it contiguous in one copy.
        return np.asarray(array).transpose(self.order)

    def decode(self, array: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        return array.transpose(self._inverse)  # type: ignore[attr-defined]
