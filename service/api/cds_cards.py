"""The MEDCARE CDS Hooks 2.0 card: what it says, where it leads, and when there is none.

Kept apart from the view (service/api/views/cds.py) because it is pure: a screen result in, a
card's JSON out, so the Markdown and the links can be tested without an EHR or a token.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from service.screening.result import Result, ScreenResult, Status

# The reasons a clinician may give for dismissing the card (CDS Hooks 2.0 `overrideReasons`,
# Codings): the EHR shows them and sends the chosen one back to the feedback endpoint.
OVERRIDE_SYSTEM = "https://medcare.example.org/fhir/CodeSystem/cds-override-reason"
OVERRIDE_REASONS: tuple[dict[str, str], ...] = (
    {"system": OVERRIDE_SYSTEM, "code": "not-interested", "display": "Patient not interested"},
    {"system": OVERRIDE_SYSTEM, "code": "not-now", "display": "Not appropriate now"},
    {"system": OVERRIDE_SYSTEM, "code": "already-screened", "display": "Already screened"},
    {"system": OVERRIDE_SYSTEM, "code": "data-wrong", "display": "The pre-screen's data is wrong"},
)
OVERRIDE_CODES = frozenset(reason["code"] for reason in OVERRIDE_REASONS)


def has_prostate_cancer(result: ScreenResult) -> bool:
    """False only when the record holds no prostate cancer diagnosis at all. `histology` is
    `not-met` for that and for a pure ductal or small-cell cancer, but the latter always makes
    `excluded-histology` `met` (criteria.md §3), so both `not-met` means no diagnosis."""
    return not (
        result.criterion("histology").result is Result.NOT_MET
        and result.criterion("excluded-histology").result is Result.NOT_MET
    )


def card(result: ScreenResult, *, web_base_url: str | None = None) -> dict[str, Any]:
    """One card: candidate or ineligible, why, what needs review; with a link to the
    patient's page when the pages' public URL (MEDCARE_WEB_BASE_URL) is configured."""
    ruled_out = [c for c in result.criteria if c.rules_out()]
    review = [
        c for c in result.criteria if c.result is Result.UNKNOWN and c.kind.value != "informational"
    ]
    if result.status is Status.INELIGIBLE:
        summary = f"MEDCARE trial: not eligible ({', '.join(c.id for c in ruled_out)})"
        indicator = "info"
    else:
        summary = "MEDCARE trial: candidate for the tumour board" + (
            f", {len(review)} item(s) to check" if review else ""
        )
        indicator = "warning"
    manual = [c.id for c in result.criteria if c.result is Result.MANUAL]
    blocks = [
        f"**Status:** {result.status.value}"
        + (f", patient type {result.patient_type}" if result.patient_type else "")
    ]
    if ruled_out:
        blocks.append(
            _list("Ruled out by", [f"{c.id}: {markdown_text(c.reason)}" for c in ruled_out])
        )
    if review:
        blocks.append(_list("Needs review", [f"{c.id}: {markdown_text(c.reason)}" for c in review]))
    if result.notes:
        blocks.append(_list("Data problems", [markdown_text(note) for note in result.notes]))
    # after the lists, in a block of its own: a line right under a bullet would continue it
    blocks.append(f"**Always checked by a person:** {', '.join(manual)}")
    answer: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": summary[:140],
        "detail": "\n\n".join(blocks),
        "indicator": indicator,
        "source": {"label": "MEDCARE Screen (pre-screen, rules " + result.rules_version + ")"},
        "overrideReasons": [dict(reason) for reason in OVERRIDE_REASONS],
    }
    if web_base_url:
        answer["links"] = [
            {
                "label": "Open the MEDCARE pre-screen",
                "url": f"{web_base_url.rstrip('/')}/patients/{result.patient.removeprefix('Patient/')}",
                "type": "absolute",
            }
        ]
    return answer


def _list(title: str, items: list[str]) -> str:
    """A titled bullet list as one Markdown block (the title its own paragraph)."""
    return f"**{title}:**\n\n" + "\n".join(f"- {item}" for item in items)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def markdown_text(text: str) -> str:
    """Text for a card's Markdown that renders as itself: reasons quote resource ids and codes
    that came from a FHIR server or a prefetch, so no HTML (`<script>`), link, image or line
    break they contain may take effect in the EHR."""
    text = _CONTROL.sub(" ", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
