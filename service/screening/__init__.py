"""The screening engine: FHIR facts in, a MEDCARE eligibility result out. No HTTP, no files."""
