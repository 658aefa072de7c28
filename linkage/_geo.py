"""Birth places as the NIR encodes them: departments, overseas departments, countries.

Weights are rough population shares for synthetic data; codes are INSEE's.
"""

from __future__ import annotations

import numpy as np

__all__ = ["METRO_DEPARTMENTS", "METRO_WEIGHTS", "OVERSEAS", "OVERSEAS_WEIGHTS", "COUNTRIES", "COUNTRY_WEIGHTS"]

# Metropolitan departments 01-95 (20 = Corsica before 1976, split into 2A/2B from 1976).
METRO_DEPARTMENTS = np.array([d for d in range(1, 96)], dtype=np.int16)
_BIG = {75: 6, 13: 5, 59: 6, 69: 4, 92: 4, 93: 4, 94: 3, 33: 4, 31: 3, 6: 3, 44: 3, 62: 4, 67: 3, 78: 3,
        91: 3, 95: 3, 77: 3, 34: 3, 76: 3, 38: 3, 57: 3, 35: 3, 29: 2, 83: 3, 60: 2, 54: 2, 45: 2, 74: 2,
        20: 1}
METRO_WEIGHTS = np.array([_BIG.get(int(d), 1.2) for d in METRO_DEPARTMENTS], dtype=np.float64)
METRO_WEIGHTS /= METRO_WEIGHTS.sum()

# Overseas departments: NIR positions 6-8 hold the 3-digit department, 9-10 the commune.
OVERSEAS = np.array([971, 972, 973, 974, 976], dtype=np.int16)
OVERSEAS_WEIGHTS = np.array([0.27, 0.24, 0.12, 0.32, 0.05])

# Born abroad: department 99, then the 3-digit INSEE country code.
COUNTRIES = np.array([352, 350, 351, 139, 127, 134, 208, 109, 131, 341, 335, 326, 322, 114, 122, 132, 140],
                     dtype=np.int16)
COUNTRY_WEIGHTS = np.array([18, 15, 7, 14, 6, 6, 5, 4, 3, 4, 4, 3, 3, 3, 3, 2, 2], dtype=np.float64)
COUNTRY_WEIGHTS /= COUNTRY_WEIGHTS.sum()
