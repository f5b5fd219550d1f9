"""The criteria of criteria.md §3, each declared once above its decide function, (Context) ->
Decision, with `criterion(id, kind, reads=...)`; manual.py holds those EHR data cannot decide.
registry.py lists them in §3 order."""
