"""API blueprints, one per resource of the API."""
