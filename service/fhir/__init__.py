"""Everything that knows FHIR wire formats: parsing, dates, references, local and server sources."""
