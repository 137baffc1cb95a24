"""OSError subclasses carrying the errno the Linux kernel gives, plus project errors.

Every filesystem error the model raises is an :class:`OSError` whose ``errno`` is the
one the kernel's overlayfs returns for the same call, so callers (and fusepy, which
returns ``-e.errno``) can treat the model exactly like ``os``.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import ClassVar


class UnionFSError(OSError):
    """Root of the model's filesystem errors: an OSError with a fixed errno."""

    errno_value: ClassVar[int] = _errno.EIO

    def __init__(self, path: str | None = None, path2: str | None = None) -> None:
        code = self.errno_value
        if path2 is not None:
            super().__init__(code, os.strerror(code), path, None, path2)
        elif path is not None:
            super().__init__(code, os.strerror(code), path)
        else:
            super().__init__(code, os.strerror(code))


def _make(name: str, code: int, base: type[OSError], doc: str) -> type[UnionFSError]:
    cls = type(name, (UnionFSError, base), {"errno_value": code, "__doc__": doc})
    cls.__module__ = __name__
    return cls


# Subclassing the matching builtin (FileNotFoundError, ...) keeps `except
# FileNotFoundError:` working exactly as it does with `os`.
NotFound = _make("NotFound", _errno.ENOENT, FileNotFoundError, "ENOENT: no such file or directory.")
Exists = _make("Exists", _errno.EEXIST, FileExistsError, "EEXIST: the name already exists.")
NotADirectory = _make("NotADirectory", _errno.ENOTDIR, NotADirectoryError,
                      "ENOTDIR: a path component is not a directory.")
IsADirectory = _make("IsADirectory", _errno.EISDIR, IsADirectoryError, "EISDIR: the path is a directory.")
NotEmpty = _make("NotEmpty", _errno.ENOTEMPTY, OSError, "ENOTEMPTY: the directory is not empty.")
CrossDevice = _make("CrossDevice", _errno.EXDEV, OSError,
                    "EXDEV: the rename needs a copy (overlayfs without redirect_dir).")
TooManyLinks = _make("TooManyLinks", _errno.ELOOP, OSError,
                     "ELOOP: too many symbolic links, or O_NOFOLLOW met a symlink.")
NameTooLong = _make("NameTooLong", _errno.ENAMETOOLONG, OSError,
                    "ENAMETOOLONG: a name over 255 bytes or a path over 4095.")
ReadOnly = _make("ReadOnly", _errno.EROFS, PermissionError, "EROFS: the view is read-only.")
InvalidArgument = _make("InvalidArgument", _errno.EINVAL, OSError, "EINVAL: invalid argument.")
NotPermitted = _make("NotPermitted", _errno.EPERM, PermissionError, "EPERM: operation not permitted.")
AccessDenied = _make("AccessDenied", _errno.EACCES, PermissionError, "EACCES: permission denied.")
Busy = _make("Busy", _errno.EBUSY, OSError, "EBUSY: the resource is in use (e.g. the root).")
NoData = _make("NoData", _errno.ENODATA, OSError, "ENODATA: no such extended attribute.")
Range = _make("Range", _errno.ERANGE, OSError, "ERANGE: an xattr name or value is too long.")
TooBig = _make("TooBig", _errno.E2BIG, OSError, "E2BIG: an xattr value is too large.")
NotSupported = _make("NotSupported", _errno.EOPNOTSUPP, OSError,
                     "EOPNOTSUPP: operation (or xattr namespace) not supported.")
BadFileDescriptor = _make("BadFileDescriptor", _errno.EBADF, OSError,
                          "EBADF: the handle is closed or not open for this.")
FileTooBig = _make("FileTooBig", _errno.EFBIG, OSError, "EFBIG: the file would exceed the maximum size.")
TooManyHardLinks = _make("TooManyHardLinks", _errno.EMLINK, OSError, "EMLINK: too many hard links.")

_BY_ERRNO: dict[int, type[UnionFSError]] = {
    cls.errno_value: cls
    for cls in (
        NotFound, Exists, NotADirectory, IsADirectory, NotEmpty, CrossDevice, TooManyLinks,
        NameTooLong, ReadOnly, InvalidArgument, NotPermitted, AccessDenied, Busy, NoData,
        Range, TooBig, NotSupported, BadFileDescriptor, FileTooBig, TooManyHardLinks,
    )
}


def error(code: int, path: str | None = None, path2: str | None = None) -> UnionFSError:
    """Return the model's error for ``code`` (an errno), naming ``path`` (and ``path2``)."""
    cls = _BY_ERRNO.get(code)
    if cls is None:
        cls = _make(f"Errno{code}", code, OSError, os.strerror(code))
        _BY_ERRNO[code] = cls
    return cls(path, path2)


class FormatError(ValueError):
    """A layer, archive, layout or manifest is malformed; the message names what and where."""


class DigestMismatch(FormatError):
    """A blob's content does not match the digest or size that references it."""


class UnsafePath(FormatError):
    """An archive entry would land outside its root (``..``, absolute, or via a link)."""


class UnknownName(KeyError):
    """A tag, digest, platform or repository that is not there.

    A :class:`KeyError` (so a :class:`LookupError`) whose ``str()`` is the plain message,
    which names what was asked for and, where it helps, what there is instead.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MountError(RuntimeError):
    """A FUSE mount failed: the kernel or libfuse refused (its message is included) or it never came up."""


class FuseUnavailable(MountError):
    """FUSE is not available here at all: no /dev/fuse, or neither server can mount.

    The message says which (tests may ``pytest.skip(str(e))`` on it).
    """
