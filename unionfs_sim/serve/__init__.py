"""Serve a :class:`~unionfs_sim.registry.Registry` over the OCI distribution API, so real
clients (docker, podman, skopeo, crane, oras) push to it and pull from it::

    reg = ufs.Registry(root="store/")
    with reg.serve(("127.0.0.1", 0)) as server:     # a background thread
        print(server.url)                            # http://127.0.0.1:PORT

The HTTP server is aiohttp (the ``serve`` extra). Why aiohttp rather than an ASGI app on
uvicorn: it is one well-kept dependency with its own C HTTP parser; it streams request
bodies (``Transfer-Encoding: chunked`` as docker sends them included) to the handler
chunk by chunk; its ``web.FileResponse`` sends blob files with ``sendfile(2)`` and answers
``Range`` requests itself; and it runs inside an event loop we own, so a server is one
background thread in the caller's process (the notebook case) with nothing else to
install. Starlette's FileResponse reads files through a thread pool in 64 KiB pieces
and uvicorn has no sendfile path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
import threading
import types
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from .app import Backend

__all__ = ["Server"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Server:
    """A registry served over HTTP(S) from a background thread; a context manager.

    ``address`` is ``(host, port)`` (port 0: any free one). ``htpasswd`` (a file of bcrypt
    entries) turns on basic auth; ``tls_cert``/``tls_key`` (PEM files) turn on HTTPS. A
    non-loopback host is refused without ``htpasswd`` unless ``insecure_public=True``.
    """

    def __init__(self, registry: Backend, address: tuple[str, int] = ("127.0.0.1", 0), *,
                 htpasswd: str | os.PathLike[str] | None = None, tls_cert: str | os.PathLike[str] | None = None,
                 tls_key: str | os.PathLike[str] | None = None, insecure_public: bool = False,
                 max_upload: int | None = None) -> None:
        """Check the options (nothing listens until :meth:`start` or ``with``).

        Raises:
            ImportError: aiohttp (the ``serve`` extra) is not installed.
            ValueError: a public address without auth, or only one of tls_cert/tls_key.
        """
        try:
            import aiohttp  # noqa: F401 - only checked here; used by the server thread
        except ImportError as e:
            raise ImportError("serving a registry needs the serve extra: pip install 'unionfs_sim[serve]'") from e
        host, port = address
        if not _is_loopback(host) and htpasswd is None and not insecure_public:
            raise ValueError(f"refusing to serve on {host!r} (not loopback) without --htpasswd; "
                             f"pass --insecure-public (insecure_public=True) to do it anyway")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")
        self.registry = registry
        self.host, self.port = host, port
        self._htpasswd = htpasswd
        self._tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
        self._max_upload = max_upload
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``http(s)://host:port`` of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    @property
    def netloc(self) -> str:
        """``host:port``, as image references name the registry (``{netloc}/team/app:1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"<Server {self.url} {self.registry!r}>"

    async def _serve(self) -> None:
        from aiohttp import web

        from .app import MAX_UPLOAD, make_app
        from .auth import Htpasswd

        auth = Htpasswd(self._htpasswd) if self._htpasswd is not None else None
        app = make_app(self.registry, auth, self._max_upload or MAX_UPLOAD)
        ctx = None
        if self._tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self._tls[0]), str(self._tls[1]))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=ctx, backlog=512)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._stop = asyncio.Event()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported by start()
            self._error = e
            self._started.set()
        finally:
            self._loop.close()

    def start(self) -> Self:
        """Start listening (in a background thread); return self once it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        self._thread = threading.Thread(target=self._run, name=f"unionfs-sim-registry-{self.port}", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Stop listening and wait for the thread (open uploads stay until the registry goes)."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: types.TracebackType | None) -> None:
        self.stop()

    def wait(self) -> None:
        """Block until the server stops (the CLI's foreground run)."""
        if self._thread is not None:
            self._thread.join()

    def info(self) -> dict[str, Any]:
        """What the server is: url, root, auth, TLS (for the CLI's start line)."""
        return {"url": self.url, "root": str(self.registry.root) if self.registry.root else None,
                "auth": self._htpasswd is not None, "tls": self._tls is not None}
