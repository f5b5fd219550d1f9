"""primary-treated (informational): prior radical treatment of the primary tumour."""

from __future__ import annotations

from service.screening.context import Context, join_names
from service.screening.facts import ClinicalFact
from service.screening.result import Decision, Result

DONE_STATUSES = {"completed"}


def _named(fact: ClinicalFact) -> str:
    when = f" on {fact.day}" if fact.day else " (date not recorded)"
    return f"{fact.label}{when} ({fact.evidence.reference})"


def primary_treated(ctx: Context) -> Decision:
    treated: list[ClinicalFact] = []
    passed_over: list[str] = []
    target = ctx.mappings.vs("rt-target-prostate")
    for fact in ctx.facts.procedures:
        if fact.status not in DONE_STATUSES:
            if (
                fact.has("radical-prostatectomy")
                or fact.has("brachytherapy")
                or fact.has("external-beam-rt")
            ):
                passed_over.append(f"{_named(fact)} has status {fact.status}")
            continue
        if fact.has("radical-prostatectomy") or fact.has("brachytherapy"):
            treated.append(fact)
        elif fact.has("external-beam-rt"):
            sites = fact.resource.get("bodySite") or []
            if any(target.matches(site) for site in sites):
                treated.append(fact)
            else:
                passed_over.append(
                    f"{_named(fact)} does not name the prostate or prostate bed as target"
                )
        elif fact.has("prostatectomy-generic"):
            passed_over.append(f"{_named(fact)} is not recorded as radical")
    notes = f" Not counted: {'; '.join(passed_over)}." if passed_over else ""
    if treated:
        reason = f"Primary tumour treated: {join_names([_named(f) for f in treated])}." + notes
        return Decision(Result.MET, reason, tuple(f.evidence for f in treated))
    reason = (
        "No radical prostatectomy, radiotherapy of the prostate or prostate bed, or brachytherapy "
        "found: treatment of the primary is then obligatory within the trial." + notes
    )
    return Decision(Result.NOT_MET, reason)
