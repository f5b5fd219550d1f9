"""Marshmallow schemas of the files in mappings/: structure and types, checked at start-up."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema


class CodeText(fields.String):
    """A code: YAML reads SNOMED or RxNorm numbers as integers, so integers become text."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return super()._deserialize(value, attr, data, **kwargs)


class HeaderSchema(Schema):
    title = fields.String(required=True)
    source = fields.String(required=True, validate=validate.Length(min=1))
    version = fields.String(required=True, validate=validate.Length(min=1))


class CodeEntrySchema(Schema):
    system = fields.String(required=True)
    code = CodeText()
    prefix = CodeText()
    display = fields.String()

    @validates_schema
    def one_of_code_or_prefix(self, data: dict[str, Any], **_: Any) -> None:
        if ("code" in data) == ("prefix" in data):
            raise ValidationError("give exactly one of 'code' or 'prefix'")


class ConceptSchema(Schema):
    description = fields.String(required=True)
    codes = fields.List(fields.Nested(CodeEntrySchema), required=True)


class LesionCodeEntrySchema(CodeEntrySchema):
    """A code in a lesion mapping file (body-sites, sizes, imaging methods): a code entry that
    may also name the organ or node region it belongs to and whether it is spinal."""

    region = fields.String()
    spinal = fields.Boolean(load_default=False)


class LesionConceptSchema(Schema):
    description = fields.String(required=True)
    codes = fields.List(fields.Nested(LesionCodeEntrySchema), required=True)


class LesionMapFileSchema(Schema):
    """mappings/body-sites.yaml, lesion-sizes.yaml, imaging-methods.yaml (criteria.md §4)."""

    header = fields.Nested(HeaderSchema, required=True)
    systems = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.Url(schemes={"http", "https"})),
        required=True,
    )
    concepts = fields.Dict(
        keys=fields.String(), values=fields.Nested(LesionConceptSchema), required=True
    )
    names = fields.Dict(
        keys=fields.String(), values=fields.List(fields.String()), load_default=dict
    )
    length_units_mm = fields.Dict(
        keys=fields.String(),
        values=fields.Float(validate=validate.Range(min=0, min_inclusive=False)),
        load_default=dict,
    )


class TermsSchema(Schema):
    # data_key: 'include' / 'exclude' are reserved names on a marshmallow Schema
    include_terms = fields.List(fields.String(), required=True, data_key="include")
    exclude_terms = fields.List(fields.String(), required=True, data_key="exclude")
    skin = fields.List(fields.String(), required=True)


class ValueSetsFileSchema(Schema):
    header = fields.Nested(HeaderSchema, required=True)
    systems = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.Url(schemes={"http", "https"})),
        required=True,
    )
    concepts = fields.Dict(keys=fields.String(), values=fields.Nested(ConceptSchema), required=True)
    procedure_names = fields.Dict(
        data_key="procedure-names", keys=fields.String(), values=fields.List(fields.String())
    )
    malignancy_terms = fields.Nested(TermsSchema, data_key="malignancy-terms", required=True)


class DrugSchema(Schema):
    classes = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    depot = fields.Boolean(load_default=False)
    rxnorm = fields.List(CodeText(), load_default=list)
    atc = fields.List(CodeText(), load_default=list)
    names = fields.List(fields.String(), load_default=list)


class AtcClassSchema(Schema):
    label = fields.String(required=True)
    classes = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    depot = fields.Boolean(load_default=False)


DRUG_CLASSES = {"gnrh", "arta", "first-gen-antiandrogen", "docetaxel", "excluded-therapy"}


class MedicationsFileSchema(Schema):
    header = fields.Nested(HeaderSchema, required=True)
    systems = fields.Dict(
        keys=fields.String(validate=validate.OneOf(["rxnorm", "atc"])),
        values=fields.List(fields.Url(schemes={"http", "https"})),
        required=True,
    )
    drugs = fields.Dict(keys=fields.String(), values=fields.Nested(DrugSchema), required=True)
    atc_class_prefixes = fields.Dict(
        keys=fields.String(), values=fields.Nested(AtcClassSchema), load_default=dict
    )

    @validates_schema
    def known_classes(self, data: dict[str, Any], **_: Any) -> None:
        errors: dict[str, Any] = {}
        for key, drug in data.get("drugs", {}).items():
            unknown = set(drug["classes"]) - DRUG_CLASSES
            if unknown:
                errors[key] = {
                    "classes": [f"unknown class {sorted(unknown)}; use {sorted(DRUG_CLASSES)}"]
                }
        if errors:
            raise ValidationError({"drugs": errors})


class UnitsFileSchema(Schema):
    header = fields.Nested(HeaderSchema, required=True)
    target_unit = fields.String(required=True, validate=validate.Equal("ng/dL"))
    factors = fields.Dict(
        keys=fields.String(),
        values=fields.Float(validate=validate.Range(min=0, min_inclusive=False)),
        required=True,
    )


class StudySchema(Schema):
    id = fields.String(required=True, validate=validate.Regexp(r"^NCT\d{8}$"))
    identifier_system = fields.Url(required=True)
    identifier_system_aliases = fields.List(fields.Url(), load_default=list)
    title = fields.String(required=True)


def _positive_int() -> fields.Integer:
    return fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


class WindowsSchema(Schema):
    imaging = _positive_int()
    testosterone = _positive_int()
    performance_status = _positive_int()


class ThresholdsSchema(Schema):
    castrate_testosterone_ng_dl = fields.Float(required=True, validate=validate.Range(min=0))
    max_progressive_lesions = _positive_int()
    min_node_short_axis_mm = fields.Float(required=True, validate=validate.Range(min=0))
    min_visceral_diameter_mm = fields.Float(required=True, validate=validate.Range(min=0))


class MedicationParametersSchema(Schema):
    default_depot_months = _positive_int()
    allowed_depot_months = fields.List(
        fields.Integer(validate=validate.Range(min=1)), required=True
    )
    docetaxel_cycle_days = _positive_int()


class ParametersFileSchema(Schema):
    header = fields.Nested(HeaderSchema, required=True)
    rules_version = fields.String(required=True)
    study = fields.Nested(StudySchema, required=True)
    canonical_base = fields.Url(required=True)
    windows_days = fields.Nested(WindowsSchema, required=True)
    thresholds = fields.Nested(ThresholdsSchema, required=True)
    medication = fields.Nested(MedicationParametersSchema, required=True)
    observation_statuses_used = fields.List(fields.String(), required=True)
