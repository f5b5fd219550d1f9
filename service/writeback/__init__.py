"""Writing screen results back to the FHIR server as standard resources (fhir-contract.md).

Pure functions only: they build the ResearchStudy, the ResearchSubject with its extensions and
narrative, the Provenance and the transaction Bundle, and decide what to write. Sending them is
the HTTP client's job.
"""

from service.writeback.extensions import DEFAULT_CANONICAL_BASE, extension_url
from service.writeback.fingerprint import fingerprint
from service.writeback.identifiers import (
    Identifier,
    conditional_url,
    study_identifier,
    subject_identifier,
)
from service.writeback.provenance import build_provenance
from service.writeback.study import (
    build_research_study,
    pick_study,
    study_if_none_exist,
    study_search_params,
)
from service.writeback.subject import (
    build_research_subject,
    read_result_from_subject,
    stored_fingerprint,
)
from service.writeback.transaction import Outcome, WriteDecision, build_transaction, plan_write

__all__ = [
    "DEFAULT_CANONICAL_BASE",
    "Identifier",
    "Outcome",
    "WriteDecision",
    "build_provenance",
    "build_research_study",
    "build_research_subject",
    "build_transaction",
    "conditional_url",
    "extension_url",
    "fingerprint",
    "pick_study",
    "plan_write",
    "read_result_from_subject",
    "stored_fingerprint",
    "study_identifier",
    "study_if_none_exist",
    "study_search_params",
    "subject_identifier",
]
