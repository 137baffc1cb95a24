"""Every error the project raises: the kernel's errnos, bad input, unknown names, mounts, builds.

Every filesystem error the model raises is an :class:`OSError` whose ``errno`` is the
one the kernel's overlayfs returns for the same call, so callers (and fusepy, which
returns ``-e.errno``) can treat the model exactly like ``os``. The others subclass the
builtin a caller would catch: :class:`ValueError` for bad input (:class:`FormatError`
names the file, member or line), :class:`KeyError`/:class:`LookupError` for unknown
names (:class:`UnknownName`), :class:`RuntimeError` for mounts. Each is importable from
here and from the module that raises it.
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


# --- image references ----------------------------------------------------------------------


class InvalidReference(ValueError):
    """A string is not a valid image reference; the message quotes it and says why."""

    def __init__(self, reference: str, reason: str, what: str = "reference") -> None:
        self.reference = reference
        self.reason = reason
        self.what = what
        super().__init__(f"invalid {what} {reference!r}: {reason}")

    def __reduce__(self) -> tuple[type[InvalidReference], tuple[str, str, str]]:
        return (type(self), (self.reference, self.reason, self.what))


# --- the distribution API (each maps to one error code of the spec) -------------------------


class NameInvalid(ValueError):
    """A repository name outside the distribution grammar (NAME_INVALID)."""


class DigestInvalid(FormatError):
    """A malformed digest, or content that does not match its digest (DIGEST_INVALID)."""


class TagInvalid(ValueError):
    """A tag outside ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`` (TAG_INVALID)."""


class ManifestInvalid(FormatError):
    """A manifest that is not valid JSON of a known shape (MANIFEST_INVALID)."""


class ManifestTooBig(ManifestInvalid):
    """A manifest over :data:`unionfs_sim.distribution.MAX_MANIFEST_SIZE` bytes."""


class ManifestBlobUnknown(ManifestInvalid):
    """A manifest naming a blob or child manifest the repository lacks (MANIFEST_BLOB_UNKNOWN)."""

    def __init__(self, message: str, digest: str) -> None:
        super().__init__(message)
        self.digest = digest


class UploadInvalid(ValueError):
    """A chunk at the wrong offset, or an upload busy with another request (416)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class RepositoryUnknown(UnknownName):
    """No such repository (NAME_UNKNOWN)."""


class ManifestUnknown(UnknownName):
    """No such manifest or tag in the repository (MANIFEST_UNKNOWN)."""


class BlobUnknown(UnknownName):
    """No such blob in the repository (BLOB_UNKNOWN)."""


class UploadUnknown(UnknownName):
    """No such upload session (BLOB_UPLOAD_UNKNOWN)."""


# --- builds ------------------------------------------------------------------------------


class DockerfileError(ValueError):
    """A Dockerfile (or a value in it) that Docker would refuse; says file, line and column."""

    def __init__(self, message: str, file: str = "Dockerfile", line: int = 0, column: int = 0) -> None:
        self.message, self.file, self.line, self.column = message, file, line, column
        where = f"{file}:{line}:{column}" if line else file
        super().__init__(f"{where}: {message}")


class ContextError(ValueError):
    """A context path that is missing, excluded, or climbs out of the context."""


class UnsupportedCommand(Exception):
    """The command or syntax is outside the python shell subset (use isolation="chroot")."""


class BuildError(Exception):
    """A build that failed: the message names file, line and what went wrong."""

    def __init__(self, message: str, *, file: str = "Dockerfile", line: int = 0, exit_code: int | None = None,
                 stderr: bytes = b"") -> None:
        self.message, self.file, self.line, self.exit_code, self.stderr = message, file, line, exit_code, stderr
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


# --- the kernel oracle ---------------------------------------------------------------------


class KernelUnavailable(Exception):
    """A real overlay mount is not possible here (not root, no overlayfs, not Linux)."""
