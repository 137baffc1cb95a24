"""HTTP basic auth from an htpasswd file of bcrypt hashes (as distribution's ``htpasswd`` auth).

Only bcrypt entries are accepted (``htpasswd -B``: ``$2y$``, ``$2b$``, ``$2a$``), as in
distribution's registry/auth/htpasswd. A bcrypt check costs tens of milliseconds, so
a successful (user, password) pair is remembered (as its SHA-256 with the hash, never
in clear) until the file changes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
from pathlib import Path

__all__ = ["AuthFailed", "Htpasswd"]


class AuthFailed(PermissionError):
    """No or wrong credentials (answered 401 with a Basic challenge)."""


class Htpasswd:
    """The users of an htpasswd file; :meth:`check` raises :class:`AuthFailed` for a bad Authorization."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Read ``path`` (``user:bcrypt-hash`` lines; blank lines and ``#`` comments skipped).

        Raises:
            ValueError: a line that is not ``user:$2...``, naming the file and line.
        """
        import bcrypt  # noqa: F401 - fail at start, not at the first request, if it is missing

        self.path = Path(path)
        self.users: dict[str, bytes] = {}
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, h = line.partition(":")
            if not sep or not user or not h.startswith(("$2y$", "$2b$", "$2a$")):
                raise ValueError(f"{self.path}:{n}: not 'user:bcrypt-hash' (use htpasswd -B)")
            self.users[user] = h.encode()
        self._ok: set[bytes] = set()

    def _verify(self, user: str, password: str) -> bool:
        import bcrypt

        h = self.users.get(user)
        if h is None:
            return False
        key = hashlib.sha256(user.encode() + b"\0" + password.encode() + b"\0" + h).digest()
        if key in self._ok:
            return True
        if h.startswith(b"$2y$"):
            h = b"$2b$" + h[4:]  # the same algorithm; some bcrypt builds only know 2a/2b
        if bcrypt.checkpw(password.encode(), h):
            self._ok.add(key)
            return True
        return False

    async def check(self, authorization: str | None) -> str:
        """The user an ``Authorization: Basic ...`` header proves; :class:`AuthFailed` otherwise."""
        if not authorization or not authorization.startswith("Basic "):
            raise AuthFailed("authentication required")
        try:
            user, sep, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as e:
            raise AuthFailed("malformed basic credentials") from e
        if not sep or not await asyncio.to_thread(self._verify, user, password):
            raise AuthFailed("invalid username or password")
        return user
