"""A user's stored preference state: what the domain computes (``ranker.preferences``) and the store keeps.

Defined in the kernel because both the store port and the preference math speak it; the math itself stays
in the domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class PreferenceState:
    """A user's profile at ``ref_time_s``. ``vector_sum`` is unnormalised; see ``user_vector``."""

    vector_sum: Vector
    weight_sum: float
    ref_time_s: float

    @classmethod
    def empty(cls, dim: int) -> PreferenceState:
        return cls(vector_sum=np.zeros(dim, dtype=np.float32), weight_sum=0.0, ref_time_s=-math.inf)

    @property
    def is_empty(self) -> bool:
        return self.weight_sum <= 0.0
