"""Container image references, parsed exactly as ``github.com/distribution/reference`` does.

The grammar, the normalisation of "familiar" Docker Hub names and the error cases mirror
that Go module (``regexp.go``, ``reference.go``, ``normalize.go``, ``helpers.go``) and the
digest validation of ``github.com/opencontainers/go-digest`` v1.0.0 (sha256, sha384 and
sha512 registered)::

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain '/'] remote-name
    domain           := host [':' port-number]
    host             := domain-name | IPv4address | '[' IPv6address ']'
    domain-name      := domain-component ['.' domain-component]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    port-number      := /[0-9]+/
    path-component   := alpha-numeric [separator alpha-numeric]*
    remote-name      := path-component ['/' path-component]*
    alpha-numeric    := /[a-z0-9]+/
    separator        := /[_.]|__|[-]+/
    tag              := /[\\w][\\w.-]{0,127}/
    digest           := algorithm ":" /[0-9a-fA-F]{32,}/   (then validated per algorithm)

:meth:`Reference.parse` is ``ParseNormalizedNamed`` (``"nginx"`` becomes
``docker.io/library/nginx``); ``Reference.parse(s, normalize=False)`` is ``Parse``.
No tag is invented while parsing; :meth:`Reference.with_default_tag` adds ``latest``.
"""

from __future__ import annotations

import re

import attrs

from .errors import InvalidReference

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "LEGACY_DEFAULT_DOMAIN",
    "OFFICIAL_REPO_PREFIX",
    "REPOSITORY_NAME_TOTAL_LENGTH_MAX",
    "InvalidReference",
    "Reference",
    "parse_any",
    "parse_docker_ref",
]

#: Maximum length of the repository *path* (the domain is not counted), as in Go.
REPOSITORY_NAME_TOTAL_LENGTH_MAX = 255
#: Domain that familiar (short) names are normalised to.
DEFAULT_DOMAIN = "docker.io"
#: Legacy Docker Hub domain, normalised to :data:`DEFAULT_DOMAIN`.
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
#: Namespace of Docker Hub's official images.
OFFICIAL_REPO_PREFIX = "library/"
#: Tag added by :meth:`Reference.with_default_tag`.
DEFAULT_TAG = "latest"

_MAX_TAG_LENGTH = 128

# --- grammar (regexp.go) -------------------------------------------------------------
# Go's RE2 reports the same submatches as a backtracking engine ("leftmost-first"), so
# Python's ``re`` splits domain/path identically.  ``re.ASCII`` makes ``\w`` mean
# [0-9A-Za-z_] as in Go; ``fullmatch`` stands for Go's ``^...$``.
_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_LOCALHOST = "localhost"
_DOMAIN_NAME_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_OPTIONAL_PORT = r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}"
_IDENTIFIER = r"([a-f0-9]{64})"
_IPV6_ADDRESS = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = _DOMAIN_NAME_COMPONENT + r"(?:\." + _DOMAIN_NAME_COMPONENT + r")*"
_HOST = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6_ADDRESS + r")"
_DOMAIN_AND_PORT = _HOST + _OPTIONAL_PORT
_PATH_COMPONENT = _ALPHANUMERIC + r"(?:" + _SEPARATOR + _ALPHANUMERIC + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_NAME = r"(?:" + _DOMAIN_AND_PORT + r"/)?" + _REMOTE_NAME

_REFERENCE_RE = re.compile(r"(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?", re.ASCII)
_ANCHORED_NAME_RE = re.compile(r"(?:(" + _DOMAIN_AND_PORT + r")/)?(" + _REMOTE_NAME + r")", re.ASCII)
_DOMAIN_RE = re.compile(_DOMAIN_AND_PORT, re.ASCII)
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT, re.ASCII)
_REMOTE_NAME_RE = re.compile(_REMOTE_NAME, re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_TAG_CHARS_RE = re.compile(r"[\w][\w.-]*", re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
_DIGEST_ALGORITHM_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*", re.ASCII)
_HEX_RE = re.compile(r"[0-9A-Fa-f]+", re.ASCII)
_IDENTIFIER_RE = re.compile(_IDENTIFIER, re.ASCII)

# --- go-digest v1.0.0 ------------------------------------------------------------------
# Registered algorithms and their hex length (size in bytes * 2); encodings are
# lower-case hex only.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_GO_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", re.ASCII)
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+", re.ASCII)




# --- helpers ---------------------------------------------------------------------------


def _go_lower(s: str) -> str:
    """``strings.ToLower``: per-rune simple lowercase (Python's ``lower`` expands U+0130)."""
    return s.replace("\u0130", "i").lower()


def _digest_error(digest: str) -> str | None:
    """Why ``digest`` fails go-digest's ``Digest.Validate`` (v1.0.0), or None if valid."""
    algorithm, colon, encoded = digest.partition(":")
    if not colon or not algorithm or not encoded:
        return f"invalid checksum digest format {digest!r} (want '<algorithm>:<hex>')"
    size = _DIGEST_HEX_LENGTHS.get(algorithm)
    if size is None:
        if not _GO_DIGEST_RE.fullmatch(digest):
            return f"invalid checksum digest format {digest!r}"
        return f"unsupported digest algorithm {algorithm!r} (supported: sha256, sha384, sha512)"
    if len(encoded) != size:
        return f"invalid digest: {algorithm} needs {size} hex digits, got {len(encoded)}"
    if not _LOWER_HEX_RE.fullmatch(encoded):
        return f"invalid digest: {algorithm} needs {size} lowercase hex digits [0-9a-f]"
    return None


def _describe_bad_digest(digest: str) -> str:
    """Why ``digest`` does not match the reference grammar's digest production."""
    algorithm, colon, encoded = digest.partition(":")
    if not digest:
        return "missing digest after '@'"
    if not colon:
        return f"invalid digest {digest!r}: missing ':' between algorithm and hex"
    if not _DIGEST_ALGORITHM_RE.fullmatch(algorithm):
        return f"invalid digest algorithm {algorithm!r}"
    if not _HEX_RE.fullmatch(encoded):
        return f"invalid digest {digest!r}: the encoded part must be hexadecimal"
    size = _DIGEST_HEX_LENGTHS.get(algorithm)
    if size is None:
        return f"invalid digest {digest!r}: needs at least 32 hex digits, got {len(encoded)}"
    return f"invalid digest: {algorithm} needs {size} hex digits, got {len(encoded)}"


def _describe_bad_tag(tag: str) -> str:
    """Why ``tag`` does not match ``[\\w][\\w.-]{0,127}``."""
    if not tag:
        return "empty tag after ':'"
    if _TAG_CHARS_RE.fullmatch(tag):
        return f"tag {tag!r} too long ({len(tag)} characters, max {_MAX_TAG_LENGTH})"
    return f"invalid tag {tag!r}: must be [A-Za-z0-9_] followed by up to 127 of [A-Za-z0-9_.-]"


def _describe_bad_path_component(component: str) -> str:
    """Why one '/'-separated path component is invalid."""
    if not component:
        return "empty path component (a leading, trailing or doubled '/')"
    if _PATH_COMPONENT_RE.fullmatch(_go_lower(component)):
        return f"repository name must be lowercase ({component!r})"
    return f"invalid path component {component!r}: must be runs of [a-z0-9] joined by '.', '_', '__' or '-'"


def _describe_bad_name(name: str) -> str | None:
    """Why ``name`` (no tag, no digest) fails the name grammar, or None if no idea."""
    if not name:
        return "missing repository name"
    parts = name.split("/")
    first = parts[0]
    if len(parts) == 1:
        if _DOMAIN_RE.fullmatch(first) and not _PATH_COMPONENT_RE.fullmatch(first):
            return f"registry host {first!r} must be followed by '/' and a repository path"
        if not _PATH_COMPONENT_RE.fullmatch(first):
            return _describe_bad_path_component(first)
        return None
    if not _DOMAIN_RE.fullmatch(first) and not _PATH_COMPONENT_RE.fullmatch(first):
        if first and (any(c in first for c in ":[]") or _go_lower(first) != first):
            return f"invalid registry host {first!r}"
        if "." in first:
            return f"{first!r} is neither a valid registry host nor a valid path component"
        return _describe_bad_path_component(first)
    for component in parts[1:]:
        if not _PATH_COMPONENT_RE.fullmatch(component):
            return _describe_bad_path_component(component)
    return None


def _diagnose(s: str) -> str | None:
    """Best-effort reason why ``s`` does not match the reference grammar (None: no idea)."""
    name_tag, at, digest = s.partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        if "@" in digest:
            return "more than one '@'"
        return _describe_bad_digest(digest)
    name = name_tag
    # The tag starts at the first ':' after the last '/' (and after any "[IPv6]").
    colon = name_tag.find(":", max(name_tag.rfind("/"), name_tag.rfind("]")) + 1)
    if colon != -1:
        name, tag = name_tag[:colon], name_tag[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            return _describe_bad_tag(tag)
    return _describe_bad_name(name)


def _split_docker_domain(name: str) -> tuple[str, str]:
    """``splitDockerDomain``: split off the domain, defaulting to Docker Hub."""
    maybe_domain, slash, maybe_remote = name.partition("/")
    if not slash:
        # A single element ("ubuntu", "ubuntu:latest") is always an official image.
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if maybe_domain == _LOCALHOST:
        domain, remote = maybe_domain, maybe_remote
    elif maybe_domain == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, maybe_remote
    elif "." in maybe_domain or ":" in maybe_domain:
        domain, remote = maybe_domain, maybe_remote
    elif _go_lower(maybe_domain) != maybe_domain:
        # Namespaces are lowercase, so an uppercase first element must be a host.
        domain, remote = maybe_domain, maybe_remote
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_REPO_PREFIX + remote
    return domain, remote


def names_domain(name: str) -> bool:
    """Whether ``name``'s first component is a registry host as Docker reads names
    (``splitDockerDomain``): ``localhost``, or holding a ``.`` or ``:``, or uppercase."""
    first, slash, _ = name.partition("/")
    if first == LEGACY_DEFAULT_DOMAIN:
        first = DEFAULT_DOMAIN
    return bool(slash) and _split_docker_domain(name)[0] == first


def _familiarize(domain: str | None, path: str) -> tuple[str | None, str]:
    """``familiarizeName``: drop ``docker.io/`` and a single-level ``library/``."""
    if domain == DEFAULT_DOMAIN:
        domain = None
        if path.startswith(OFFICIAL_REPO_PREFIX):
            remainder = path[len(OFFICIAL_REPO_PREFIX) :]
            if "/" not in remainder:
                path = remainder
    return domain, path


def _join(domain: str | None, path: str | None, tag: str | None, digest: str | None) -> str:
    """The string form of the given parts (``name[:tag][@digest]``, or the bare digest)."""
    out = path or ""
    if domain:
        out = f"{domain}/{out}"
    if tag is not None:
        out += f":{tag}"
    if digest is not None:
        out = f"{out}@{digest}" if out else digest
    return out


def _component_error(domain: str | None, path: str | None, tag: str | None, digest: str | None) -> str | None:
    """Why these parts do not form a valid reference, or None if they do."""
    for field, value in (("domain", domain), ("path", path), ("tag", tag), ("digest", digest)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"Reference.{field} must be a str or None, not {type(value).__name__}")
    if path is None:
        if domain is not None or tag is not None or digest is None:
            return "a reference without a path must be digest-only (domain and tag None)"
    else:
        if domain is not None and not _DOMAIN_RE.fullmatch(domain):
            return f"invalid registry host {domain!r}"
        if not _REMOTE_NAME_RE.fullmatch(path):
            bad = next((c for c in path.split("/") if not _PATH_COMPONENT_RE.fullmatch(c)), path)
            return _describe_bad_path_component(bad)
        if len(path) > REPOSITORY_NAME_TOTAL_LENGTH_MAX:
            return f"repository path longer than {REPOSITORY_NAME_TOTAL_LENGTH_MAX} characters ({len(path)})"
        name = f"{domain}/{path}" if domain else path
        match = _ANCHORED_NAME_RE.fullmatch(name)
        assert match is not None  # both halves matched their productions above
        if (match.group(1), match.group(2)) != (domain, path):
            return f"ambiguous split: {name!r} parses as domain {match.group(1)!r}, path {match.group(2)!r}"
        if tag is not None and not _TAG_RE.fullmatch(tag):
            return _describe_bad_tag(tag)
    if digest is not None:
        if not _DIGEST_RE.fullmatch(digest):
            return _describe_bad_digest(digest)
        return _digest_error(digest)
    return None


def _parse(s: str, original: str) -> tuple[str | None, str, str | None, str | None]:
    """``reference.Parse`` of ``s``; errors quote ``original`` (the caller's input)."""
    if not s:
        raise InvalidReference(original, "empty")
    match = _REFERENCE_RE.fullmatch(s)
    if match is None:
        lowered = _go_lower(s)
        if lowered != s and _REFERENCE_RE.fullmatch(lowered):
            raise InvalidReference(original, "repository name must be lowercase")
        reason = _diagnose(original) or _diagnose(s) or "invalid reference format"
        raise InvalidReference(original, reason)
    name = match.group(1)
    assert name is not None  # group 1 is not optional
    tag: str | None = match.group(2)
    digest: str | None = match.group(3)
    name_match = _ANCHORED_NAME_RE.fullmatch(name)
    assert name_match is not None  # the name group matched the same production
    domain: str | None = name_match.group(1)
    path = name_match.group(2)
    assert path is not None  # the remote-name group is not optional
    if len(path) > REPOSITORY_NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(
            original,
            f"repository path longer than {REPOSITORY_NAME_TOTAL_LENGTH_MAX} characters ({len(path)})",
        )
    if digest is not None:
        digest_problem = _digest_error(digest)
        if digest_problem is not None:
            raise InvalidReference(original, digest_problem)
    return domain, path, tag, digest


def _parse_normalized(s: str) -> tuple[str | None, str, str | None, str | None]:
    """``reference.ParseNormalizedNamed`` of ``s``."""
    if not s:
        raise InvalidReference(s, "empty")
    if _IDENTIFIER_RE.fullmatch(s):
        raise InvalidReference(s, "cannot specify 64-byte hexadecimal strings (that is an image ID, not a name)")
    domain, remainder = _split_docker_domain(s)
    remote = remainder.partition(":")[0]
    if _go_lower(remote) != remote:
        # As in Go, ``remote`` runs up to the first ':' so it may include "@algorithm".
        repo, at, algorithm = remote.partition("@")
        if at and _go_lower(repo) == repo and _DIGEST_ALGORITHM_RE.fullmatch(algorithm):
            raise InvalidReference(s, f"digest algorithm {algorithm!r} must be lowercase")
        raise InvalidReference(s, f"repository name must be lowercase ({remote!r})")
    return _parse(f"{domain}/{remainder}", s)


# --- the reference type -------------------------------------------------------------------


@attrs.frozen
class Reference:
    """An image reference ``[domain/]path[:tag][@digest]``; immutable, hashable, by value.

    Construction validates the parts (same grammar as :meth:`parse`); digest-only
    references (from :func:`parse_any`) have ``domain``, ``path`` and ``tag`` None.
    """

    #: Registry host with optional port (``docker.io``, ``[::1]:5000``), or None.
    domain: str | None
    #: Repository path (``library/nginx``), or None for a digest-only reference.
    path: str | None
    #: Tag, or None (parsing never invents one).
    tag: str | None = None
    #: Digest ``algorithm:hex`` (e.g. ``sha256:<64 hex>``), or None.
    digest: str | None = None

    def __attrs_post_init__(self) -> None:
        reason = _component_error(self.domain, self.path, self.tag, self.digest)
        if reason is not None:
            raise InvalidReference(_join(self.domain, self.path, self.tag, self.digest), reason)

    @classmethod
    def parse(cls, s: str, normalize: bool = True) -> Reference:
        """Parse ``s`` like ``ParseNormalizedNamed`` (``nginx`` -> ``docker.io/library/nginx``).

        With ``normalize=False`` it is ``reference.Parse``: no default domain, so
        ``domain`` is None unless the name's first component matches the domain grammar.
        """
        if not isinstance(s, str):
            raise TypeError(f"reference must be a str, not {type(s).__name__}")
        parts = _parse_normalized(s) if normalize else _parse(s, s)
        return cls(*parts)

    @property
    def name(self) -> str:
        """``domain/path`` without tag or digest (``""`` for a digest-only reference)."""
        if self.path is None:
            return ""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def repository(self) -> str:
        """Alias of :attr:`name`: the full repository name ``domain/path``."""
        return self.name

    @property
    def familiar_name(self) -> str:
        """``FamiliarName``: :attr:`name` without ``docker.io/`` and single-level ``library/``."""
        if self.path is None:
            return ""
        domain, path = _familiarize(self.domain, self.path)
        return _join(domain, path, None, None)

    @property
    def familiar(self) -> str:
        """``FamiliarString``: :attr:`familiar_name` plus ``:tag`` and ``@digest``.

        As in Go, this may not re-parse to the same reference when the remaining first
        component looks like a host (``docker.io/example.com/x`` -> ``example.com/x``).
        """
        if self.path is None:
            return str(self)
        domain, path = _familiarize(self.domain, self.path)
        return _join(domain, path, self.tag, self.digest)

    def with_tag(self, tag: str) -> Reference:
        """A copy with ``tag`` set (an existing digest is kept), like ``WithTag``."""
        if self.path is None:
            raise InvalidReference(str(self), "a digest-only reference has no name to tag")
        if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
            raise InvalidReference(str(tag), _describe_bad_tag(str(tag)), what="tag")
        return attrs.evolve(self, tag=tag)

    def with_digest(self, digest: str) -> Reference:
        """A copy with ``digest`` set (an existing tag is kept), like ``WithDigest``."""
        if self.path is None:
            raise InvalidReference(str(self), "a digest-only reference has no name")
        if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
            raise InvalidReference(str(digest), _describe_bad_digest(str(digest)), what="digest")
        reason = _digest_error(digest)
        if reason is not None:
            raise InvalidReference(digest, reason, what="digest")
        return attrs.evolve(self, digest=digest)

    def with_default_tag(self) -> Reference:
        """``TagNameOnly``: add tag ``latest`` only if there is neither tag nor digest."""
        if self.path is None or self.tag is not None or self.digest is not None:
            return self
        return self.with_tag(DEFAULT_TAG)

    def __str__(self) -> str:
        """The full string ``domain/path[:tag][@digest]`` (just the digest if digest-only)."""
        return _join(self.domain, self.path, self.tag, self.digest)


def parse_any(s: str) -> Reference:
    """``ParseAnyReference``: a bare 64-hex ID or a valid digest gives a digest-only reference.

    That reference has ``domain``, ``path`` and ``tag`` None and ``str()`` is the digest
    (``sha256:`` is prefixed to a bare ID); anything else is :meth:`Reference.parse`\\ d.
    """
    if not isinstance(s, str):
        raise TypeError(f"reference must be a str, not {type(s).__name__}")
    if _IDENTIFIER_RE.fullmatch(s):
        return Reference(None, None, None, f"sha256:{s}")
    if _digest_error(s) is None:
        return Reference(None, None, None, s)
    return Reference.parse(s)


def parse_docker_ref(s: str) -> Reference:
    """``ParseDockerRef``: normalise, then drop the tag if there is a digest, else default it."""
    ref = Reference.parse(s)
    if ref.tag is not None and ref.digest is not None:
        return attrs.evolve(ref, tag=None)
    return ref.with_default_tag()
