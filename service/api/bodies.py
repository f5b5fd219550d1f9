"""Request bodies that webargs' `json.loads` would misread or choke on, refused with a 400.

Its own module because two places call it at different moments: the app's authentication hook
(after the caller is known) and the CDS Hooks blueprint (after the EHR's JWT is verified).
"""

from __future__ import annotations

import json

from flask import request

from service.api.errors import ApiError
from service.fhir import json_input


def check_json_body() -> None:
    """Refuse, with a 400 that says why, a JSON body that webargs' `json.loads` would misread or
    choke on: two equal keys in one object (json.loads keeps the last, silently), or nesting
    deeper than any FHIR data (json.loads raises RecursionError near 1,000 levels: a 500).
    Called after authentication, so a caller without credentials learns nothing about bodies.
    A body that is not JSON at all is left to webargs' own 400."""
    if not request.is_json:
        return
    data = request.get_data(cache=True)
    if not data:
        return
    try:
        json_input.loads(data, unique_keys=True)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return
    except json_input.DuplicateKey as exc:
        raise ApiError(400, "duplicate-key", f"the request body is refused: {exc}") from None
    except json_input.NestedTooDeeply as exc:
        raise ApiError(400, "malformed-json", f"the request body is {exc}") from None
