"""primary-treated (informational): prior radical treatment of the primary tumour (criteria.md §3).

medcare-2: a prostatectomy not recorded as radical (SNOMED 90470006 may be a simple
prostatectomy for benign enlargement) and radiotherapy without a target or to the pelvis (which
may include the prostate bed) are `unknown` in a patient with prostate cancer: the reason names
them and asks for the reports. A TURP is not treatment of the primary, and the reason says so.
Informational: it never changes the status and never reads as an order.
"""

from __future__ import annotations

from service.screening.context import Context, join_names
from service.screening.criteria.histology import find_histology
from service.screening.criterion import criterion
from service.screening.decision import Decision, Kind, Result
from service.screening.facts import ClinicalFact

DONE_STATUSES = {"completed"}
_TREATMENTS = (
    "radical-prostatectomy",
    "brachytherapy",
    "external-beam-rt",
    "prostatectomy-generic",
)
REPORTS = (
    "Ask for the operation and pathology reports, or the radiotherapy report (treating hospital)."
)


def _named(fact: ClinicalFact) -> str:
    when = f" on {fact.day}" if fact.day else " (date not recorded)"
    return f"{fact.label}{when}"


@criterion(
    "primary-treated",
    Kind.INFORMATIONAL,
    reads={"radical-prostatectomy", "brachytherapy", "external-beam-rt", "prostatectomy-generic"},
)
def primary_treated(ctx: Context) -> Decision:
    treated: list[ClinicalFact] = []
    doubtful: list[tuple[ClinicalFact, str]] = []
    passed_over: list[str] = []
    target = ctx.mappings.vs("rt-target-prostate")
    pelvis = ctx.mappings.valuesets.get("rt-target-pelvis")
    for fact in ctx.facts.procedures:
        if fact.has("turp") and not any(fact.has(c) for c in _TREATMENTS):
            passed_over.append(
                f"{_named(fact)} is a transurethral resection, not treatment of the primary"
            )
            continue
        if not any(fact.has(c) for c in _TREATMENTS):
            continue
        if fact.status not in DONE_STATUSES:
            passed_over.append(f"{_named(fact)} has status {fact.status}")
            continue
        if fact.has("radical-prostatectomy") or fact.has("brachytherapy"):
            treated.append(fact)
        elif fact.has("external-beam-rt"):
            sites = fact.resource.get("bodySite") or []
            if any(target.matches(site) for site in sites):
                treated.append(fact)
            elif not sites:
                doubtful.append((fact, "radiotherapy without a recorded target"))
            elif pelvis is not None and any(pelvis.matches(site) for site in sites):
                doubtful.append(
                    (fact, "radiotherapy to the pelvis, which may include the prostate bed")
                )
            else:
                passed_over.append(f"{_named(fact)} targets another site, not the prostate")
        elif fact.has("prostatectomy-generic"):
            doubtful.append((fact, "a prostatectomy not recorded as radical (may be a simple one)"))
    notes = f" Not counted: {'; '.join(passed_over)}." if passed_over else ""
    evidence = tuple(f.evidence for f in treated)
    if treated:
        reason = f"Primary tumour treated: {join_names([_named(f) for f in treated])}." + notes
        return Decision(Result.MET, reason, evidence)
    if doubtful and find_histology(ctx).prostate:
        parts = join_names([f"{_named(f)}: {why}" for f, why in doubtful])
        reason = (
            f"Treatment of the primary not certain: {parts} (if the primary was not treated, its "
            f"treatment is part of the trial).{notes} {REPORTS}"
        )
        return Decision(Result.UNKNOWN, reason, tuple(f.evidence for f, _ in doubtful))
    if doubtful:
        notes += f" Not counted: {join_names([_named(f) for f, _ in doubtful])}."
    reason = (
        "No radical prostatectomy, radiotherapy of the prostate or prostate bed, or brachytherapy "
        "found: treatment of the primary is then obligatory within the trial." + notes
    )
    return Decision(Result.NOT_MET, reason)
