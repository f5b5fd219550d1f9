"""Reports a trial team needs (issue 15 item 5): the attrition funnel of the current population
as an SVG picture, and the screening log as CSV, identified for the site and de-identified for
the sponsor. Pure functions over what the store reads (service.store.population_report): no
HTTP here, so the API (service/api/views/reports.py) and the command line
(service/cli_reports.py) give the same bytes.
"""
