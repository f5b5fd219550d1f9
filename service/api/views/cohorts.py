"""/v1/cohorts: the screening population, as named FHIR searches, Groups or id lists.

A view here checks the permission and the body's shape, calls a cohort use case
(service/cohorts.py) and lets its error go to the one error table (service/api/error_map.py):
400 for a definition that cannot be kept, 404 for no such cohort, 409 for a name taken.
Reading needs the read permission; defining, changing, refreshing or removing needs screen
(a definition makes the service read and screen patients).
"""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask_smorest import Blueprint

from service.api.cohort_schemas import (
    POPULATIONS,
    CohortDefinitionSchema,
    CohortListSchema,
    CohortRequestSchema,
    CohortSchema,
)
from service.api.deps import runtime
from service.api.endpoints import guarded
from service.api.permissions import Permission
from service.cohorts import CohortDefinition, CohortInfo, Cohorts
from service.store.models import CohortKind

blp = Blueprint(
    "cohorts", __name__, url_prefix="/v1/cohorts", description="The screening population"
)

# how a stored cohort's spec reads in a body: the field of its kind
SPEC_FIELD = {CohortKind.LIST.value: "patients", CohortKind.SEARCH.value: "search",
              CohortKind.GROUP.value: "group"}  # fmt: skip
INVALID = {400: "the definition cannot be kept: a search parameter that does not select a "
           "cohort, a schedule that is not cron, or a search or Group the server refuses"}  # fmt: skip


def _cohorts() -> Cohorts:
    return Cohorts.of(runtime())


def _definition(cohorts: Cohorts, body: dict[str, Any]) -> CohortDefinition:
    given = {field: body[field] for field in POPULATIONS if field in body}
    return cohorts.definition(**given, schedule=body["schedule"])


def _view(info: CohortInfo) -> dict[str, Any]:
    data = info.to_dict()
    data[SPEC_FIELD[info.kind]] = data.pop("spec")
    data["links"] = {
        "self": url_for("cohorts.get_cohort", name=info.name),
        "refresh": url_for("cohorts.refresh_cohort", name=info.name),
    }
    return data


@blp.route("", methods=["GET"])
@blp.doc(operationId="listCohorts")
@guarded(blp, Permission.READ, CohortListSchema)
def list_cohorts() -> dict[str, Any]:
    """Every cohort, by name, with how many patients its last refresh found."""
    return {"items": [_view(info) for info in _cohorts().all()]}


@blp.route("", methods=["POST"])
@blp.doc(operationId="createCohort")
@guarded(
    blp, Permission.SCREEN, CohortSchema, status=201, args=CohortRequestSchema,
    errors={**INVALID, 409: "a cohort of that name exists", 502: "the FHIR server failed"},
)  # fmt: skip
def create_cohort(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Define a cohort; a search or Group is resolved on the FHIR server now, and patients
    new to the screening population are queued for a screen."""
    cohorts = _cohorts()
    view = _view(cohorts.define(body["name"], _definition(cohorts, body)))
    return view, 201, {"Location": view["links"]["self"]}


@blp.route("/<name>", methods=["GET"])
@blp.doc(operationId="getCohort")
@guarded(blp, Permission.READ, CohortSchema, errors={404: None})
def get_cohort(name: str) -> dict[str, Any]:
    """One cohort."""
    return _view(_cohorts().get(name))


@blp.route("/<name>", methods=["PUT"])
@blp.doc(operationId="replaceCohort")
@guarded(
    blp, Permission.SCREEN, CohortSchema, args=CohortDefinitionSchema,
    errors={**INVALID, 404: None, 502: "the FHIR server failed"},
)  # fmt: skip
def replace_cohort(body: dict[str, Any], name: str) -> dict[str, Any]:
    """Redefine an existing cohort; its members are resolved again."""
    cohorts = _cohorts()
    return _view(cohorts.replace(name, _definition(cohorts, body)))


@blp.route("/<name>", methods=["DELETE"])
@blp.doc(operationId="deleteCohort")
@guarded(blp, Permission.SCREEN, CohortSchema, errors={404: None})
def delete_cohort(name: str) -> dict[str, Any]:
    """Forget a cohort (answered with it as it was). Its patients leave the screening
    population unless another cohort holds them; their results stay."""
    cohorts = _cohorts()
    view = _view(cohorts.get(name))
    cohorts.remove(name)
    return view


@blp.route("/<name>/refresh", methods=["POST"])
@blp.doc(operationId="refreshCohort")
@guarded(
    blp, Permission.SCREEN, CohortSchema,
    errors={**INVALID, 404: None, 502: "the FHIR server failed"},
)  # fmt: skip
def refresh_cohort(name: str) -> dict[str, Any]:
    """Resolve the cohort's members again now (200 when done); patients new to the
    screening population are queued for a screen."""
    return _view(_cohorts().refresh(name))
