"""Exponential backoff with jitter, shared by every retry loop.

Jitter keeps peers that lost the same thing at the same moment (a server
restart, a network blip) from all retrying in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_delay: float = 0.25
    max_delay: float = 8.0
    jitter: float = 0.5
    """Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (1-based): base·2^(attempt-1), capped."""
        base = min(self.max_delay, self.base_delay * 2 ** max(0, attempt - 1))
        return float(base * random.uniform(1 - self.jitter, 1 + self.jitter))
