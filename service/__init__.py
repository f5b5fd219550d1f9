"""MEDCARE Screen: a FHIR-integrated eligibility pre-screener for the MEDCARE trial (NCT06585007)."""

__version__ = "0.1.0"
