"""Run the application on uvicorn (``elir serve``)."""

from __future__ import annotations

import socket
from typing import Callable

from elir_cli.errors import UsageError

from .config import ServeConfig
from .service import Service

# Open connections uvicorn accepts before answering 503: the queue bounds work, this bounds sockets.
CONNECTIONS_PER_QUEUE_SLOT = 4
MIN_CONNECTIONS = 32


def serve(config: ServeConfig, *, log: Callable[[str], None], started: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted; with ``preload``, load the default model before answering."""
    import uvicorn

    from .app import create_app

    sock = listen(config.host, config.port)  # first: a port in use fails before a model loads
    service = Service(config, log=log)
    if config.preload:
        try:
            service.preload()
        except BaseException:
            service.stop()
            sock.close()
            raise
    app = create_app(config, service=service)
    uv = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                        limit_concurrency=max(MIN_CONNECTIONS, CONNECTIONS_PER_QUEUE_SLOT * config.queue),
                        timeout_keep_alive=5, lifespan="on", server_header=False)
    server = uvicorn.Server(uv)
    if started is not None:
        host, port = sock.getsockname()[:2]
        started(f"http://{f'[{host}]' if ':' in host else host}:{port}/")
    try:
        server.run(sockets=[sock])  # shuts down gracefully on Ctrl-C / SIGTERM, then re-raises the signal
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a server is stopped: not an error
    finally:
        service.stop()


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), or a one-line error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="choose another --port, or stop what is using it") from None
    return sock
