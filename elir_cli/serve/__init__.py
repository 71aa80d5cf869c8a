"""``elir serve``: an HTTP API and a web page over the photo pipeline.

FastAPI's "bigger applications" layout: :mod:`.app` builds the application
from the routers in :mod:`.routers` (restore, jobs, models/health, the page),
:mod:`.worker` is the one thread that owns the loaded models and takes work
from a bounded queue, :mod:`.jobs` keeps the results of asynchronous jobs on
disk with an expiry and a size budget, :mod:`.guard` bounds uploads while
they stream and checks the API key before a body is read, and
:mod:`.config` holds the server's settings. ``static/`` is the web page
(plain HTML, CSS and JavaScript; no build step, no CDN).

FastAPI, uvicorn and python-multipart are the ``serve`` extra; nothing here
imports them at package import, so ``elir --help`` stays fast.

Layer 4. May import: elir_cli.pipeline, elir_cli.faces, elir_cli.images, elir_cli.registry, elir_cli.model.
"""

from __future__ import annotations

EXTRA_HINT = 'pip install "elir-cli[serve]"'
REQUIRED_MODULES = ("fastapi", "uvicorn", "multipart")


def missing_dependency() -> str | None:
    """The first module of the ``serve`` extra that cannot be imported, or None (called by ``elir serve``,
    which imports them next anyway)."""
    from importlib import import_module

    for name in REQUIRED_MODULES:
        try:
            import_module(name)
        except ImportError:
            return name
    return None
