"""Compression of a client's update on its way to the coordinator. Pure numpy.

A client compresses the *delta* between the parameters it would send and the
global parameters it received; the coordinator adds the decompressed delta
back to the same global parameters before aggregation. Both ends hold the
global parameters, so only the delta's encoding travels.

* ``int8``: each row of a matrix (each whole vector) is scaled by its largest
  magnitude and rounded to the nearest of 255 levels; one float32 scale per
  row travels beside the int8 codes (about 3.6x fewer bytes at dim 32).
* ``topk``: only the ``topk-fraction`` largest-magnitude entries of each
  tensor travel, as int32 flat indices and float32 values (8 bytes each);
  the rest of the delta is zero. No error feedback is kept.

Privacy: compression is applied to what the privacy mechanism already
produced. With user-level DP the merchant compresses its clipped, noised
update, which is post-processing and costs no privacy. With client-level DP
the coordinator clips and noises the *decompressed* update, so the guarantee
is the same as without compression. SecAgg+ sums masked field elements and
cannot carry compressed updates, so the two are refused together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError

KINDS = ("none", "int8", "topk")
_SEP = "::"  # encoded array names: "<parameter>::<part>"
Arrays = Mapping[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class CompressionConfig:
    kind: str = "none"
    topk_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"compression must be one of {', '.join(KINDS)}, got {self.kind!r}.")
        if not 0 < self.topk_fraction <= 1:
            raise ConfigError(f"topk-fraction must be in (0, 1], got {self.topk_fraction}.")

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def describe(self) -> str:
        if self.kind == "topk":
            return f"top-k ({self.topk_fraction:g} of each tensor's delta)"
        return {"none": "none", "int8": "8-bit quantised deltas (one scale per row)"}[self.kind]


def _int8(delta: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    rows = delta.reshape(delta.shape[0], -1) if delta.ndim >= 2 else delta.reshape(1, -1)
    scale = np.abs(rows).max(axis=1).astype(np.float32) / 127.0
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    codes = np.clip(np.rint(rows / safe[:, None]), -127, 127).astype(np.int8)
    return codes.reshape(delta.shape), scale


def _topk(
    delta: npt.NDArray[Any], fraction: float
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    flat = delta.reshape(-1)
    k = max(1, math.ceil(fraction * flat.size)) if flat.size else 0
    if k >= flat.size:
        index = np.arange(flat.size)
    else:
        index = np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :])
    return index.astype(np.int32), flat[index].astype(np.float32)


def compress(
    params: Arrays, reference: Arrays, config: CompressionConfig
) -> dict[str, npt.NDArray[Any]]:
    """Encode ``params - reference`` per tensor; ``reference`` is what the receiver holds."""
    if set(params) != set(reference):
        raise ValueError(
            f"parameters {sorted(params)} and reference {sorted(reference)} name different tensors"
        )
    out: dict[str, npt.NDArray[Any]] = {}
    for name in sorted(params):
        delta = np.asarray(params[name], dtype=np.float32) - np.asarray(
            reference[name], dtype=np.float32
        )
        if config.kind == "int8":
            out[f"{name}{_SEP}q"], out[f"{name}{_SEP}scale"] = _int8(delta)
        elif config.kind == "topk":
            out[f"{name}{_SEP}index"], out[f"{name}{_SEP}value"] = _topk(
                delta, config.topk_fraction
            )
        else:
            raise ValueError("compress() called with compression 'none'")
    return out


def decompress(
    encoded: Arrays, reference: Arrays, config: CompressionConfig
) -> dict[str, npt.NDArray[np.float32]]:
    """``reference`` plus the decoded deltas; the inverse of :func:`compress` up to its loss."""
    parts = ("q", "scale") if config.kind == "int8" else ("index", "value")
    expected = {f"{name}{_SEP}{part}" for name in reference for part in parts}
    if set(encoded) != expected:
        raise ValueError(
            f"a {config.kind}-compressed update must carry exactly {sorted(expected)}, "
            f"got {sorted(encoded)}"
        )
    out: dict[str, npt.NDArray[np.float32]] = {}
    for name, base in reference.items():
        base32 = np.asarray(base, dtype=np.float32)
        if config.kind == "int8":
            codes = np.asarray(encoded[f"{name}{_SEP}q"])
            scale = np.asarray(encoded[f"{name}{_SEP}scale"], dtype=np.float32)
            rows = codes.reshape(scale.shape[0], -1).astype(np.float32) * scale[:, None]
            if rows.size != base32.size:
                raise ValueError(f"{name}: {rows.size} decoded values for shape {base32.shape}")
            out[name] = base32 + rows.reshape(base32.shape)
        else:
            index = np.asarray(encoded[f"{name}{_SEP}index"], dtype=np.int64)
            value = np.asarray(encoded[f"{name}{_SEP}value"], dtype=np.float32)
            if index.shape != value.shape or (
                index.size and not 0 <= index.min() <= index.max() < base32.size
            ):
                raise ValueError(f"{name}: top-k indices out of range for shape {base32.shape}")
            flat = base32.reshape(-1).copy()
            flat[index] += value
            out[name] = flat.reshape(base32.shape)
    return out


def to_fields(config: CompressionConfig) -> dict[str, Any]:
    """The instruction's fields (none when compression is off, so old merchants see no change)."""
    from common.constants import COMPRESSION_FIELD, TOPK_FRACTION_FIELD

    if not config.enabled:
        return {}
    return {COMPRESSION_FIELD: config.kind, TOPK_FRACTION_FIELD: config.topk_fraction}


def from_fields(fields: Mapping[str, Any]) -> CompressionConfig:
    from common.constants import COMPRESSION_FIELD, TOPK_FRACTION_FIELD

    return CompressionConfig(
        kind=str(fields.get(COMPRESSION_FIELD, "none")),
        topk_fraction=float(fields.get(TOPK_FRACTION_FIELD, 0.1)),
    )
