"""Where a lesion is (criteria.md §4 "Where a lesion is"): location class, organ or node region.

The codes are data (mappings/body-sites.yaml, codes.md §4d): SNOMED body structures, oBDS sites
and ICD-O-3 topography in `bodySite`, and the secondary-neoplasm codes of a Condition. A site no
mapping classifies is of *unknown location*: it cannot be shown to be extracranial, so it is
only ever a possible lesion, and the reason names its code.

Also here, for every criterion that reads metastases (G's spinal-lesion reads these too): whether
a secondary-cancer Condition is a prostate metastasis at all (mCODE's related-primary link to
another cancer says it is not, criteria.md §3), and whether a site is spinal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.fhir.record import type_and_id
from service.mapping.model import Mappings, codings_of, normalize_code, texts_of
from service.screening.concepts import SITE_CONCEPTS
from service.screening.context import Context
from service.screening.facts import ClinicalFact

# Location classes (criteria.md §4), named as in mappings/body-sites.yaml without "bodysite-".
LOCAL, REGIONAL_NODE, NONREGIONAL_NODE, NODE = "local", "regional-node", "nonregional-node", "node"
BONE, VISCERAL, INTRACRANIAL = "bone", "visceral", "intracranial"
POSSIBLY_INTRACRANIAL, LOCAL_OR_VISCERAL, PELVIC_REGION = (
    "possibly-intracranial",
    "local-or-visceral",
    "pelvic-region",
)
UNKNOWN = "unknown"
CLASSES = (
    LOCAL, REGIONAL_NODE, NONREGIONAL_NODE, NODE, BONE, VISCERAL, INTRACRANIAL,
    POSSIBLY_INTRACRANIAL, LOCAL_OR_VISCERAL, PELVIC_REGION,
)  # fmt: skip
NODES = frozenset({REGIONAL_NODE, NONREGIONAL_NODE, NODE})
# The older site-* value sets of valuesets.yaml, read when body-sites.yaml does not list a code.
_FROM_SITE_CONCEPT = {
    "site-local": LOCAL,
    "site-regional-node": REGIONAL_NODE,
    "site-nonregional-node": NONREGIONAL_NODE,
    "site-bone": BONE,
    "site-visceral": VISCERAL,
    "site-intracranial": INTRACRANIAL,
    "site-unclear-cns": POSSIBLY_INTRACRANIAL,
    "site-unspecified": UNKNOWN,
}
CLASS_WORDS = {
    LOCAL: "local recurrence",
    REGIONAL_NODE: "regional lymph node",
    NONREGIONAL_NODE: "non-regional lymph node",
    NODE: "lymph node",
    BONE: "bone",
    VISCERAL: "visceral",
    INTRACRANIAL: "intracranial",
    POSSIBLY_INTRACRANIAL: "nervous system, possibly intracranial",
    LOCAL_OR_VISCERAL: "bladder or rectum (local extension or visceral)",
    PELVIC_REGION: "pelvis (bone, node or local)",
    UNKNOWN: "unknown location",
}
# Node regions that count as more than one site (criteria.md §4: C77.8 counts as two).
REGION_WEIGHT = {"node-multiple": 2}
RELATED_PRIMARY_URLS = (
    "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-related-primary-cancer-condition",
    "http://hl7.org/fhir/StructureDefinition/condition-related",
)


@dataclass(frozen=True)
class Site:
    """A classified location: its class, its organ / node region, its key and how to name it."""

    klass: str
    region: str
    key: str  # class + code: what matches a lesion across exams (criteria.md §4 item 2)
    name: str
    spinal: bool = False
    code: str = ""  # the first coding as written ('system|code'), for reasons

    @property
    def extracranial(self) -> bool:
        return self.klass not in (INTRACRANIAL, POSSIBLY_INTRACRANIAL, UNKNOWN)


# (id of a Mappings, codings) -> (class, region, spinal): a chart repeats the same few site
# codes, and matching one runs through every class and region value set. The Mappings are held
# in _OWNERS so that their ids cannot be reused while entries name them. Bounded.
_CLASSIFIED: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[str, str, bool] | None] = {}
_OWNERS: dict[int, Mappings] = {}
_CLASSIFIED_SIZE = 4096
_OWNERS_SIZE = 4
_UNSEEN = ("", "", False)  # a sentinel no classification equals by identity


def classify(ctx: Context, concept: Any) -> Site | None:
    """The site a body-structure (or secondary-neoplasm) concept names; None if none classifies."""
    owner = id(ctx.mappings)
    if _OWNERS.get(owner) is not ctx.mappings:
        if len(_OWNERS) >= _OWNERS_SIZE:
            _OWNERS.clear()
            _CLASSIFIED.clear()
        _OWNERS[owner] = ctx.mappings
    key = (owner, tuple(codings_of(concept)))
    found = _CLASSIFIED.get(key, _UNSEEN)
    if found is _UNSEEN:
        if len(_CLASSIFIED) >= _CLASSIFIED_SIZE:
            _CLASSIFIED.clear()
        found = _CLASSIFIED[key] = _classified(ctx, concept)
    if found is None:
        return None
    klass, region, spinal = found
    return _make_site(klass, region, spinal, concept)


def _classified(ctx: Context, concept: Any) -> tuple[str, str, bool] | None:
    vs = ctx.mappings.vs
    for klass in CLASSES:
        if vs(f"bodysite-{klass}").matches(concept):
            return _class_region_spinal(ctx, klass, concept)
    return None


def _class_region_spinal(ctx: Context, klass: str, concept: Any) -> tuple[str, str, bool]:
    maps = ctx.mappings.lesion_maps
    region = next(
        (name for name, valueset in maps.regions.items() if valueset.matches(concept)),
        f"{klass}:{_code_key(concept)}",
    )
    return klass, region, maps.spinal.matches(concept)


def _site(ctx: Context, klass: str, concept: Any) -> Site:
    return _make_site(*_class_region_spinal(ctx, klass, concept), concept)


def _make_site(klass: str, region: str, spinal: bool, concept: Any) -> Site:
    return Site(
        klass, region, f"{klass}|{_code_key(concept)}", site_name(concept), spinal,
        _code_as_written(concept),
    )  # fmt: skip


def _first_code(concept: Any, absent: str, spelled: Callable[[str], str] = str) -> str:
    """The concept's first coding as 'system|code' (the code `spelled`), else `absent`: a
    site's key, its code in reasons and its name without a text all start from it."""
    for system, code in codings_of(concept):
        return f"{system}|{spelled(code)}"
    return absent


def _code_as_written(concept: Any) -> str:
    return _first_code(concept, "no code")


def site_name(concept: Any) -> str:
    """'left iliac bone' (the text), else a display, else 'system|code'."""
    texts = texts_of(concept)
    if texts:
        return texts[0].strip()
    return _first_code(concept, "no site recorded")


def _code_key(concept: Any) -> str:
    return _first_code(concept, "-", normalize_code)


def unknown_site(concept: Any) -> Site:
    """A site no mapping classifies (criteria.md §4: a possible lesion, its code named)."""
    key = _code_key(concept)
    return Site(
        UNKNOWN, f"unknown:{key}", f"unknown|{key}", site_name(concept), False,
        _code_as_written(concept),
    )  # fmt: skip


# -- secondary-cancer Conditions ---------------------------------------------------------------


def is_metastasis_condition(ctx: Context, fact: ClinicalFact) -> bool:
    """A secondary-cancer Condition (or a local recurrence): its code names a metastatic site.
    An MII distant-metastasis Observation is one too (codes.md §4d-g)."""
    if fact.resource_type == "Observation":
        return fact.has("distant-metastasis-site")
    code = fact.resource.get("code")
    return any(fact.has(c) for c in SITE_CONCEPTS) or classify(ctx, code) is not None


def condition_site(ctx: Context, fact: ClinicalFact) -> Site:
    """Where a metastasis Condition is: its bodySite when that classifies (more specific), else
    its code (body-sites.yaml first, then the site-* value sets), else unknown location. An
    MII distant-metastasis Observation names its site in its value."""
    if fact.resource_type == "Observation":
        value = fact.resource.get("valueCodeableConcept")
        return classify(ctx, value) or unknown_site(value)
    for body_site in fact.resource.get("bodySite") or []:
        site = classify(ctx, body_site)
        if site is not None:
            return site
    code = fact.resource.get("code")
    site = classify(ctx, code)
    if site is not None:
        return site
    for concept, klass in _FROM_SITE_CONCEPT.items():
        if fact.has(concept) and klass != UNKNOWN:
            return _site(ctx, klass, code)
    body_sites = fact.resource.get("bodySite") or []
    return unknown_site(body_sites[0] if body_sites else code)


def related_primary(fact: ClinicalFact) -> list[str]:
    """References of the primary a secondary Condition names (codes.md §4g, all three ways)."""
    found = []
    for extension in fact.resource.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") in RELATED_PRIMARY_URLS:
            reference = (extension.get("valueReference") or {}).get("reference")
            if isinstance(reference, str):
                found.append(reference)
    for focus in fact.resource.get("focus") or []:
        if isinstance(focus, dict) and isinstance(focus.get("reference"), str):
            found.append(focus["reference"])
    return found


def other_primary(ctx: Context, fact: ClinicalFact) -> ClinicalFact | None:
    """The non-prostate primary a secondary Condition is linked to, if it is linked to one.

    A link to a Condition that is prostate cancer, or that the record does not hold, leaves the
    metastasis a prostate metastasis (the record does not show otherwise)."""
    for reference in related_primary(fact):
        target = _find_condition(ctx, reference)
        if target is not None and not target.has("prostate-cancer"):
            return target
    return None


def _find_condition(ctx: Context, reference: str) -> ClinicalFact | None:
    """The Condition a reference names: 'Condition/1', an absolute URL, or 'urn:uuid:x' (a
    Bundle's fullUrl, matched against the id)."""
    wanted = type_and_id(reference) or reference
    wanted_id = wanted.rsplit("/", 1)[-1].removeprefix("urn:uuid:")
    for candidate in ctx.facts.conditions:
        if candidate.resource.get("id") == wanted_id:
            return candidate
    return None


def is_prostate_metastasis(ctx: Context, fact: ClinicalFact) -> bool:
    """A metastasis Condition that is this prostate cancer's spread (not another primary's)."""
    return is_metastasis_condition(ctx, fact) and other_primary(ctx, fact) is None


UNCONFIRMED = frozenset({"unconfirmed", "provisional", "differential"})


def verification(fact: ClinicalFact) -> str | None:
    """The Condition's verificationStatus code (None when unstated)."""
    for _system, code in codings_of(fact.resource.get("verificationStatus")):
        return code
    return None


def is_unconfirmed(fact: ClinicalFact) -> bool:
    """criteria.md §3: unconfirmed, provisional or differential never decide on their own."""
    return verification(fact) in UNCONFIRMED
