"""The error tree shared by every layer of appliance-release.

Every error carries a one-line ``message`` saying what was wrong and a ``hint``
saying what to do about it. The CLI prints ``str(error)`` (message, then hint)
and exits with ``error.exit_code``; ``--debug`` adds the traceback.

::

    ToolkitError                      exit 1 unless stated
    ├── InvalidInputError             a value we were given is malformed      (exit 2)
    │   ├── InvalidDigestError        not ``algorithm:hex`` per the image spec
    │   └── InvalidReferenceError     not a distribution-spec reference
    ├── IntegrityError                bytes do not match what was promised    (exit 4)
    │   ├── DigestMismatchError       content hashes to another digest
    │   └── SizeLimitError            content larger than allowed/declared
    ├── RegistryError                 the registry answered with an error     (exit 3)
    │   ├── AuthenticationError       401: no or bad credentials
    │   ├── AuthorizationError        403: credentials lack the permission
    │   ├── NotFoundError             404: manifest, blob, repository unknown
    │   ├── UnsupportedError          the registry does not implement it
    │   └── TransportError            unreachable, TLS failure, plain HTTP, retries exhausted
    └── LayoutError                   an OCI image layout on disk is malformed

Other layers (``consumer``, ``publisher``) subclass ``ToolkitError`` for their
own domain errors, so one ``except ToolkitError`` in the CLI handles them all.
"""

from __future__ import annotations


class ToolkitError(Exception):
    """Base of every error raised on purpose by appliance-release."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class InvalidInputError(ToolkitError):
    """A value given to us (argument, file, document) is malformed."""

    exit_code = 2


class InvalidDigestError(InvalidInputError):
    """A digest string does not follow the OCI image-spec grammar."""


class InvalidReferenceError(InvalidInputError):
    """A reference string does not follow the distribution-spec grammar."""


class IntegrityError(ToolkitError):
    """Content does not match the digest or size it was promised with."""

    exit_code = 4


class DigestMismatchError(IntegrityError):
    """Content hashes to a different digest than expected."""

    def __init__(self, what: str, expected: str, actual: str, *, hint: str = "") -> None:
        super().__init__(
            f"{what}: expected digest {expected} but the content hashes to {actual}",
            hint=hint or "the registry or a proxy served corrupted or substituted content; "
            "retry, and report it to the registry operator if it persists",
        )
        self.expected = expected
        self.actual = actual


class SizeLimitError(IntegrityError):
    """Content is larger than its descriptor says or than a configured limit."""


class RegistryError(ToolkitError):
    """The registry answered a request with an error.

    ``codes`` keeps the OCI ``errors[].code`` values of the response body.
    """

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        method: str = "",
        url: str = "",
        status: int | None = None,
        codes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, hint=hint)
        self.method = method
        self.url = url
        self.status = status
        self.codes = codes


class AuthenticationError(RegistryError):
    """The registry refused our credentials, or we had none (401)."""


class AuthorizationError(RegistryError):
    """The credentials are valid but lack the permission (403)."""


class NotFoundError(RegistryError):
    """The manifest, blob, tag or repository does not exist (404)."""


class UnsupportedError(RegistryError):
    """The registry does not implement the operation (405, or 404 on an optional API)."""


class TransportError(RegistryError):
    """No usable HTTP answer: unreachable host, TLS failure, plain HTTP, retries exhausted."""


class LayoutError(ToolkitError):
    """An OCI image layout (directory or tar) is missing or malformed."""

    exit_code = 2
