"""splitmix64's finaliser, element-wise on uint64: the one bit mixer behind the data pipeline's text hashes and the
contamination check's token n-gram hashes (both packages use it, so it lives below them)."""

from __future__ import annotations

import numpy as np


def mix64(x: np.ndarray) -> np.ndarray:
    """A bijection on uint64 arrays that spreads every input bit over the output (splitmix64's finaliser)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
