"""The coordinators' web pages (issue 15): sign-in, the worklist, and later the patient page.

Why a package apart from service/api: these pages are for people with a browser session (an
OpenID Connect sign-in, a cookie, CSRF tokens), while service/api serves machines with bearer
tokens. Server-rendered Jinja templates and our own CSS; no CDN, no build chain. The app
factory calls `register_web` once; everything else is under this package.
"""

from __future__ import annotations

from service.web.blueprint import register_web

__all__ = ["register_web"]
