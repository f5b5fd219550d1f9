"""Keeping results current (issue 14): noticing new data and passing time without being asked.

`subscriptions` works out and keeps in place the FHIR Subscriptions the service needs;
`notifications` reads what a FHIR server sends to the notification endpoint. The queue, the
sweeps and the schedules that act on them live next to these modules.
"""
