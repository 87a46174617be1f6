"""Order a turn's model calls so the fewest models are loaded.

Pure functions. The decision steps of a turn (tool decision, routing) do not depend on each
other, so they may run in any order; the thinking and response steps come after them, in a
fixed order. When the budget holds only one model at a time, every change of model between
consecutive steps is a load, so the best order starts with a model that is already resident
and ends with the model the next fixed step needs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from itertools import permutations


def count_loads(models: Sequence[str | None], resident: Collection[str], capacity: int = 1) -> int:
    """Loads needed to run steps using ``models`` in order (``None`` = no model), with an LRU
    cache of ``capacity`` models that starts with ``resident`` in it."""
    cache: list[str] = list(resident)[-capacity:] if capacity > 0 else []
    loads = 0
    for model in models:
        if model is None:
            continue
        if model in cache:
            cache.remove(model)
        else:
            loads += 1
            if len(cache) >= capacity:
                cache.pop(0)
        cache.append(model)
    return loads


def order_steps(
    steps: Sequence[tuple[str, str | None]],
    *,
    resident: Collection[str] = (),
    then: Sequence[str | None] = (),
    capacity: int = 1,
) -> list[str]:
    """Names of the independent ``steps`` (name, model id) in the order with fewest loads,
    counting the fixed steps that follow (``then``). Ties keep the given order."""
    if len(steps) > 7:  # permutations get expensive; the pipeline has two
        return [name for name, _ in steps]
    best: tuple[int, list[str]] | None = None
    for perm in permutations(steps):
        cost = count_loads([m for _, m in perm] + list(then), resident, capacity)
        if best is None or cost < best[0]:
            best = (cost, [name for name, _ in perm])
    return best[1] if best else []
