"""Which value sets apply to which resource type, and a fast (system, code) index over them.

Selecting resources by code on the raw dicts, before any model is built, is what keeps a
Synthea-sized record cheap: most of a patient's thousands of resources are dropped here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from service.mapping.model import Mappings, ValueSet, codings_of, normalize_code, texts_of

OBSERVATION_CONCEPTS = (
    "testosterone-total", "testosterone-not-total", "ecog", "karnofsky",
    "lesion-count", "imaging-lesion", "disease-status", "histology-observation",
    "m-category", "size-observation", "distant-metastasis-site",
)  # fmt: skip
CONDITION_CONCEPTS = (
    "prostate-cancer", "prostate-other-histology", "histology-adenocarcinoma",
    "histology-excluded", "not-prostate-primary",
    "site-local", "site-regional-node", "site-nonregional-node", "site-bone", "site-visceral",
    "site-intracranial", "site-unclear-cns", "site-unspecified",
    "spinal-metastasis", "spinal-complication",
    "malignancy-primary", "skin-keratinocyte-carcinoma", "in-situ", "history-of-malignancy",
)  # fmt: skip
PROCEDURE_CONCEPTS = (
    "radical-prostatectomy", "prostatectomy-generic", "brachytherapy", "external-beam-rt",
    "orchiectomy-bilateral", "radionuclide-therapy-specific", "radionuclide-therapy-generic",
    "turp",
)  # fmt: skip
SITE_CONCEPTS = (
    "site-local", "site-regional-node", "site-nonregional-node", "site-bone", "site-visceral",
    "site-intracranial", "site-unclear-cns", "site-unspecified",
)  # fmt: skip

# Pseudo-concepts for conditions recognised by name (mappings malignancy-terms).
MALIGNANCY_BY_NAME = "malignancy-by-name"
SKIN_BY_NAME = "skin-carcinoma-by-name"


@dataclass(frozen=True)
class ConceptIndex:
    """Exact (system, code) -> concept names, plus prefix rules, for one group of value sets."""

    exact: dict[tuple[str, str], frozenset[str]]
    prefixed: tuple[ValueSet, ...]

    @classmethod
    def build(cls, mappings: Mappings, names: Iterable[str]) -> ConceptIndex:
        exact: dict[tuple[str, str], set[str]] = {}
        prefixed = []
        for name in names:
            valueset = mappings.vs(name)
            for pair in valueset.exact_pairs():
                exact.setdefault(pair, set()).add(name)
            if valueset.prefixes:
                prefixed.append(valueset)
        return cls({k: frozenset(v) for k, v in exact.items()}, tuple(prefixed))

    def concepts_of(self, concept: object) -> frozenset[str]:
        found: set[str] = set()
        for system, code in codings_of(concept):
            hit = self.exact.get((system, normalize_code(code)))
            if hit:
                found.update(hit)
            for valueset in self.prefixed:
                if valueset.name not in found and valueset.contains(system, code):
                    found.add(valueset.name)
        return frozenset(found)


def malignancy_by_name(mappings: Mappings, concept: object) -> frozenset[str]:
    """Name-based recognition of a primary malignancy, used only when no listed code matched."""
    terms = mappings.malignancy_terms
    words = " ".join(texts_of(concept)).casefold()
    if not words or terms.include is None or not terms.include.search(words):
        return frozenset()
    if terms.skin is not None and terms.skin.search(words):
        return frozenset({SKIN_BY_NAME})
    if terms.exclude is not None and terms.exclude.search(words):
        return frozenset()
    return frozenset({MALIGNANCY_BY_NAME})
