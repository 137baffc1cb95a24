"""``unionfs-sim serve``: a registry kept in a directory, served over the OCI distribution API.

aiohttp (the ``serve`` extra) is imported only when the command runs.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click


def _parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:5000`` for IPv6) as ``(host, port)``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:5000")
    return host.strip("[]"), int(port)


@click.command("serve")
@click.option("--root", required=True, type=click.Path(file_okay=False),
              help="the registry's directory (created if missing)")
@click.option("--listen", default="127.0.0.1:5000", show_default=True, metavar="HOST:PORT", help="address to listen on")
@click.option("--htpasswd", type=click.Path(exists=True, dir_okay=False),
              help="basic auth from this htpasswd file (bcrypt)")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="serve HTTPS with this PEM certificate")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="... and this PEM key")
@click.option("--insecure-public", is_flag=True, help="allow a non-loopback address without --htpasswd")
def serve_command(root: str, listen: str, htpasswd: str | None, tls_cert: str | None, tls_key: str | None,
                  insecure_public: bool) -> None:
    """Serve the registry stored in ROOT until SIGTERM or Ctrl-C, then stop cleanly.

    docker, podman and skopeo push to it and pull from it (docker treats 127.0.0.1 as an
    insecure registry; podman and skopeo need --tls-verify=false without TLS). Python sees
    the same store: unionfs_sim.Registry(root=ROOT).
    """
    try:
        import aiohttp  # noqa: F401
    except ImportError as e:
        raise click.ClickException("serving needs the serve extra: pip install 'unionfs_sim[serve]'") from e
    from ..registry import Registry
    from ..serve import Server

    address = _parse_listen(listen)
    try:
        reg = Registry(root=root)
        server = Server(reg, address, htpasswd=htpasswd, tls_cert=tls_cert, tls_key=tls_key,
                        insecure_public=insecure_public)
        server.start()
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    click.echo(f"serving {root} at {server.url}" + (" (basic auth)" if htpasswd else ""), err=True)
    try:
        while not stop.wait(3600):
            pass
    finally:
        server.stop()
        for s, h in old.items():
            signal.signal(s, h)
    click.echo("stopped", err=True)
