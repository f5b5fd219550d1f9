"""The fingerprint of a result's DECISION: equal for an equal decision, so a patient whose
decision did not change gets no feed entry and no new write-back.

fhir-contract.md "What the current result is": a change is a change of the decision (status,
patient type, a criterion's result or reason, the rules version), not a new version of an
unchanged resource. So the hash covers the §7 result without:
- every criterion's `evidence` (resource references with their versions, and summaries): a
  phone-number edit makes a new Patient version, which the age criterion cites, but decides
  nothing. What the evidence says that matters is in the reason ("Total testosterone 1.2
  nmol/L on 2026-10-30"), so a new value or date still changes the fingerprint;
- `as_of` (a daily re-screen of unchanged data must not rewrite every patient) and
  `software_version` (an upgrade that changes no result must not either; the Provenance of the
  stored version names the software that wrote it);
- the version of any reference a reason or note quotes ("Not used: Observation/9/_history/2
  (entered in error)" reads as "Observation/9"): the same set-aside resource in a new version,
  or read from files without versions, decides nothing either.
Kept: patient, study, status, patient type, strata, review lists, notes (all written back and
derived from the decision or the record's problems), each criterion's id, kind, result and
reason in §3 order, and the rules version.

The coordinators' disposition (service/dispositions.py) is written with the result (it sets
ResearchSubject.status, subject.py), so the WRITTEN fingerprint covers it: recording one makes
the stored subject's fingerprint differ, which queues exactly one write-back; the same
disposition again writes nothing. `new` (nobody has looked yet) hashes as no disposition, so
subjects written before dispositions existed keep their fingerprint. The store's fingerprint
(the feed's "changed") is the decision's alone: `fingerprint(result)` without a disposition.

Reasons quote the screening day ("Age 76 on 2026-11-26", "no score within 90 days before
2026-11-26"); that day is replaced by a placeholder before hashing, for the same reason.

FORMAT is part of the hash: bump it when the written ResearchSubject changes shape (extensions,
narrative), so the next screen rewrites subjects stored in the old shape.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from service.screening.result import ScreenResult

FORMAT = 2  # 2: meta.profile names the MEDCARE ResearchSubject profile
EXCLUDED = ("as_of", "software_version")
# What a criterion contributes to the decision; its evidence does not (see the module doc).
CRITERION_DECISION = ("id", "kind", "result", "reason")
PREFIX = "sha256:"
# The disposition that says nothing beyond the automatic result (service.dispositions).
NO_DISPOSITION = "new"
# "/_history/<version id>" (FHIR id characters) after a quoted reference.
VERSION = re.compile(rb"/_history/[A-Za-z0-9.\-]{1,64}")


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: one byte string per content."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decision(result: ScreenResult) -> dict[str, Any]:
    """The part of the §7 result that decides "changed": everything but `EXCLUDED` and the
    criteria's evidence."""
    content = {k: v for k, v in result.to_dict().items() if k not in EXCLUDED}
    content["criteria"] = [
        {key: criterion[key] for key in CRITERION_DECISION} for criterion in content["criteria"]
    ]
    return content


def fingerprint(result: ScreenResult, disposition: str | None = None) -> str:
    """`sha256:<64 hex>` of the result's decision (`decision`), the write-back format and the
    coordinators' `disposition` when it says more than `NO_DISPOSITION`."""
    content = decision(result)
    if disposition and disposition != NO_DISPOSITION:
        content["disposition"] = disposition
    content["writeback_format"] = FORMAT
    text = VERSION.sub(b"", canonical_json(content)).replace(result.as_of.encode(), b"{as_of}")
    return PREFIX + hashlib.sha256(text).hexdigest()
