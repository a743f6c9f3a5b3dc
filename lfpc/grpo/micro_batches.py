"""Group the trajectories of a mini-batch into micro-batches (one forward/backward each)."""

from __future__ import annotations

from typing import Sequence


def micro_batches(lengths: Sequence[int], max_rows: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices into ``lengths`` (token counts of the rows) grouped into micro-batches of at most ``max_rows`` rows.

    Without ``max_tokens``: consecutive slices, in the given order. With it (token-budget micro-batching, verl's
    dynamic batch size): rows are taken longest first, and a micro-batch takes the next row while its padded size
    (rows x its longest row) stays within ``max_tokens``. A row longer than the budget is alone, short rows share,
    and rows that share have neighbouring lengths, so little padding is computed.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if max_tokens is None:
        return [list(range(i, min(i + max_rows, len(lengths)))) for i in range(0, len(lengths), max_rows)]
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):  # stable: ties keep their order
        group = groups[-1] if groups else None
        if group is not None and len(group) < max_rows and (len(group) + 1) * lengths[group[0]] <= max_tokens:
            group.append(index)
        else:
            groups.append([index])
    return groups
