"""Every criterion of criteria.md §3, in §3 order: the one list the engine walks.

To add a criterion: declare it with `criterion(...)` above its decide function in a module of
criteria/ (or with `manual(...)` in criteria/manual.py), then put it here at its place in §3.
The result contract (result.CRITERIA), the engine and the safety net read it from here.
"""

from __future__ import annotations

from service.screening.criteria import (
    conditions,
    demographics,
    histology,
    manual,
    performance,
    primary,
    progression,
    testosterone,
    therapy,
)
from service.screening.criterion import Criterion

REGISTRY: tuple[Criterion, ...] = (
    # inclusion
    manual.CONSENT,
    histology.histology,
    progression.oligoprogression,
    therapy.systemic_therapy,
    testosterone.castrate_testosterone,
    primary.primary_treated,  # informational
    performance.performance_status,
    demographics.age,
    demographics.sex,
    manual.COMPLIANCE,
    manual.TUMOUR_BOARD,
    # exclusion
    histology.excluded_histology,
    testosterone.testosterone_above_castrate,
    progression.polyprogression,
    conditions.other_malignancy,
    manual.SBRT_CONTRAINDICATED,
    conditions.spinal_lesion,
    therapy.prior_excluded_therapy,
    progression.progression_on_docetaxel,
    manual.UNABLE_TO_CONSENT,
    demographics.deceased,
)
