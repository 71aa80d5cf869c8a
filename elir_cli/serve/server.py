"""Run the application on uvicorn (``elir serve``)."""

from __future__ import annotations

from typing import Callable

from .config import ServeConfig
from .service import Service

# Open connections uvicorn accepts before answering 503: the queue bounds work, this bounds sockets.
CONNECTIONS_PER_QUEUE_SLOT = 4
MIN_CONNECTIONS = 32


def serve(config: ServeConfig, *, log: Callable[[str], None], started: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted; with ``preload``, load the default model before listening."""
    import uvicorn

    from .app import create_app

    service = Service(config, log=log)
    if config.preload:
        service.preload()
    app = create_app(config, service=service)
    uv = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                        limit_concurrency=max(MIN_CONNECTIONS, CONNECTIONS_PER_QUEUE_SLOT * config.queue),
                        timeout_keep_alive=5, lifespan="on", server_header=False)
    server = uvicorn.Server(uv)
    if started is not None:
        host = f"[{config.host}]" if ":" in config.host else config.host
        started(f"http://{host}:{config.port}/")
    try:
        server.run()  # shuts down gracefully on Ctrl-C / SIGTERM, then re-raises the signal
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a server is stopped: not an error
    finally:
        service.stop()
