"""Running the console: a loopback socket, uvicorn, and the one-time login URL."""

from __future__ import annotations

import socket
from collections.abc import Callable

from childvault.console._app import Console

#: The only address the console ever listens on.
HOST = "127.0.0.1"


def bind(port: int) -> socket.socket:
    """A listening TCP socket on 127.0.0.1:``port`` (0: a free port chosen by the OS)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(16)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(console: Console, port: int, announce: Callable[[str], None]) -> None:
    """Serve ``console`` on 127.0.0.1:``port`` until interrupted (Ctrl+C or SIGTERM).

    ``announce`` receives the one-time login URL once the socket is listening,
    so the URL printed always works.
    """
    import uvicorn

    sock = bind(port)
    console.port = sock.getsockname()[1]
    config = uvicorn.Config(
        console.app,
        log_level="warning",
        # The access log would print the one-time login URL and every request id.
        access_log=False,
        # Nothing sits in front of the console: forwarded headers are not believed.
        proxy_headers=False,
        server_header=False,
        lifespan="off",
        http="h11",
        ws="none",
    )
    url = console.new_login_url()

    class _AnnouncingServer(uvicorn.Server):
        # The URL is printed only once uvicorn has taken over SIGINT/SIGTERM
        # (capture_signals wraps startup): a Ctrl+C right after the URL appears
        # then stops the server cleanly, where before it could land in the
        # window between the print and uvicorn's handlers.
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and not self.should_exit:
                announce(url)

    server = _AnnouncingServer(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
