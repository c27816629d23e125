"""The web console, ``/ui/``: server-rendered pages (Jinja2, autoescaped) with htmx for partial
updates, served by ``modelport serve`` from this package (templates and static files ship in the
wheel; nothing is fetched from another origin). ``serving/rest.py`` hands it every ``/ui`` request.

See ``docs/console.md`` for the technology choice and the security model, :mod:`modelport.ui.routes`
for the pages and :mod:`modelport.ui.sessions` for sign-in, sessions and CSRF tokens.
"""

from modelport.ui.routes import Console

__all__ = ["Console"]
