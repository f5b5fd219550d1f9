"""mappings/near-misses.yaml: the patterns of records that look like data a rule needs but that
no mapping matched (issue 11 item 10). Checked at start-up like every mapping file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields, validate

from service.mapping.model import NearMissConcept, NearMisses, word_pattern

FILE_NAME = "near-misses.yaml"
KINDS = ("observation", "medication")


class _HeaderSchema(Schema):
    title = fields.String(required=True)
    source = fields.String(required=True, validate=validate.Length(min=1))
    version = fields.String(required=True, validate=validate.Length(min=1))


class _ConceptSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    what = fields.String(required=True)
    criteria = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    # per language: en, nl, fr, de at least (the trial runs in Belgium)
    patterns = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), required=True)
    # data_key: "exclude" is a reserved name on a marshmallow Schema
    exclude_words = fields.List(fields.String(), load_default=list, data_key="exclude")


class NearMissFileSchema(Schema):
    header = fields.Nested(_HeaderSchema, required=True)
    concepts = fields.Dict(
        keys=fields.String(), values=fields.Nested(_ConceptSchema), required=True
    )
    blinded = fields.Dict(
        keys=fields.String(), values=fields.List(fields.String()), load_default=dict
    )


def load_near_misses(folder: Path) -> NearMisses:
    """The near-miss patterns of `folder`; none (an empty set) when the file is absent, since a
    site's older mappings folder must still screen. A file that is present must be valid."""
    from service.mapping.load import MappingError

    path = folder / FILE_NAME
    if not path.exists():
        return NearMisses()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc: dict[str, Any] = NearMissFileSchema().load(raw)
    except (yaml.YAMLError, ValidationError, TypeError) as exc:
        raise MappingError(f"{path}: {exc}") from exc
    concepts = []
    for name, entry in doc["concepts"].items():
        phrases = [p for words in entry["patterns"].values() for p in words]
        concepts.append(
            NearMissConcept(
                name=name,
                kind=entry["kind"],
                what=entry["what"],
                criteria=tuple(entry["criteria"]),
                pattern=word_pattern(phrases),
                exclude=word_pattern(entry["exclude_words"]),
                phrases=tuple(sorted({p.lower() for p in phrases if p.strip()})),
            )
        )
    blinded = word_pattern([p for words in doc["blinded"].values() for p in words])
    return NearMisses(tuple(concepts), blinded, doc["header"]["version"])
