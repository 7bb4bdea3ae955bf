"""Collectives in compiled HLO text (no jax import, so tests can use it in-process)."""

from __future__ import annotations

import re

import numpy as np

COLLECTIVE_OPS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_COLLECTIVE_LINE = re.compile(
    r"=\s*(?P<result>.+?)\s+(?P<op>" + "|".join(COLLECTIVE_OPS) + r")(?:-start)?\("
)
_SHAPE = re.compile(r"\b(?P<dtype>pred|[subf]\d+|bf16)\[(?P<dims>[\d,]*)\]")


def collectives(hlo_text: str) -> list[dict]:
    """Every collective in compiled HLO text: its op, result shapes and result bytes."""
    found = []
    for line in hlo_text.splitlines():
        match = _COLLECTIVE_LINE.search(line)
        if not match:
            continue
        shapes, total_bytes = [], 0
        for shape in _SHAPE.finditer(match["result"]):
            dims = [int(d) for d in shape["dims"].split(",") if d]
            bits = 8 if shape["dtype"] == "pred" else int(re.sub(r"\D", "", shape["dtype"]))
            shapes.append(f"{shape['dtype']}[{','.join(map(str, dims))}]")
            total_bytes += int(np.prod(dims, dtype=np.int64)) * bits // 8
        found.append({"op": match["op"], "shapes": shapes, "bytes": total_bytes})
    return found
