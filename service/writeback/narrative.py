"""The human-readable narrative of a ResearchSubject: what a clinician sees in any FHIR viewer.

FHIR narrative is XHTML with a restricted set of elements (no scripts, no styles needed); every
piece of text is escaped, and characters XML cannot carry at all are dropped, so a strange
display in a hospital's data can never make the narrative invalid. It holds only what the result
holds: ids, codes, reasons and evidence summaries, no names or birth dates.
"""

from __future__ import annotations

import html
import re

from service.screening.result import CriterionResult, ScreenResult, Status

XHTML_NS = "http://www.w3.org/1999/xhtml"
# Characters outside the XML 1.0 Char production.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_STRATA_LABELS = {
    "metastases": "metastases",
    "localization": "localization",
    "systemic_therapy": "systemic therapy",
}


def text(value: object) -> str:
    """Escaped XHTML text of any value."""
    return html.escape(_NOT_XML.sub("", str(value)), quote=True)


def _listing(items: tuple[str, ...]) -> str:
    return text(", ".join(items)) if items else "none"


def _outcome(result: ScreenResult) -> str:
    if result.status is Status.INELIGIBLE:
        ruled_out = tuple(c.id for c in result.criteria if c.rules_out())
        return f"<b>ineligible</b> (ruled out by: {_listing(ruled_out)})"
    if result.needs_review:
        return "<b>candidate</b>, pending review of the criteria listed below"
    return "<b>candidate</b>"


def _strata(result: ScreenResult) -> str:
    parts = [
        f"{text(_STRATA_LABELS.get(key, key))} {text(value) if value else 'not determined'}"
        for key, value in result.strata.items()
    ]
    return "; ".join(parts) if parts else "not determined"


def _evidence(criterion: CriterionResult) -> str:
    if not criterion.evidence:
        return "-"
    return "<br/>".join(f"{text(e.summary)} ({text(e.reference)})" for e in criterion.evidence)


def _row(criterion: CriterionResult) -> str:
    result = text(criterion.result.value)
    if criterion.rules_out():
        result = f"<b>{result}</b>"
    cells = (
        text(criterion.id),
        text(criterion.kind.value),
        result,
        text(criterion.reason),
        _evidence(criterion),
    )
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_narrative(result: ScreenResult) -> str:
    """The `text.div` of the ResearchSubject: outcome, type, strata, review, every criterion."""
    patient_type = (
        text(result.patient_type) if result.patient_type is not None else "not determined"
    )
    items = [
        f"Outcome: {_outcome(result)}",
        f"Patient type: {patient_type}",
        f"Strata: {_strata(result)}",
        f"Needs review: {_listing(result.needs_review)}",
        f"Missing data: {_listing(result.missing_data)}",
    ]
    if result.notes:
        items.append(f"Notes: {text('; '.join(result.notes))}")
    items.append(
        f"Rules {text(result.rules_version)}, MEDCARE Screen {text(result.software_version)}"
    )
    header = (
        "<tr><th>Criterion</th><th>Kind</th><th>Result</th><th>Reason</th><th>Evidence</th></tr>"
    )
    return (
        f'<div xmlns="{XHTML_NS}">'
        f"<p><b>{text(result.study)} pre-screen as of {text(result.as_of)}</b>. "
        "A pre-screen: the tumour board and the investigators decide.</p>"
        "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"
        f'<table class="grid"><thead>{header}</thead><tbody>'
        + "".join(_row(c) for c in result.criteria)
        + "</tbody></table></div>"
    )
