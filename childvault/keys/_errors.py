"""The one error hierarchy of childvault.

It lives in ``keys`` because layering is one-way (``cli -> vault -> keys``) and
both packages raise these errors; ``vault`` re-exports every name. Each class
carries the process exit code of the command-line contract (README.md), so the
CLI maps errors to exit codes in one place.

Messages say what went wrong and what to do. They are made with
:func:`childvault._i18n._t`: ``str(exc)`` is English, and :meth:`ChildVaultError.localized`
gives the reader's language (the CLI's error handler uses it). They never contain a secret, a
field value or the reason a token or ciphertext was rejected: that detail goes
to the audit log (``detail`` attribute, never shown by ``str()``).
"""

from __future__ import annotations

from childvault._i18n import _t, localize


class ChildVaultError(Exception):
    """Base class of every error childvault raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        #: Internal reason, for the audit log only; never printed.
        self.detail = detail

    def localized(self, locale: str | None = None) -> str:
        """The message in ``locale`` (the environment's when None); ``str(self)`` stays English."""
        return localize(self.args[0], locale) if self.args else str(self)


class UsageError(ChildVaultError):
    """The input given (an argument, a field, a schema, a purpose) is not acceptable."""

    exit_code = 2


class ValidationError(UsageError):
    """A value or record does not match the schema; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None, detail: str | None = None):
        super().__init__(message, detail=detail)
        self.field = field


class NotFound(ChildVaultError):
    """A named user, record, request or grant does not exist."""


class ConfigError(ChildVaultError):
    """The home directory or its configuration is missing or inconsistent."""


class StorageError(ChildVaultError):
    """The database could not be read or written (disk full, locked too long, I/O error)."""


class ImportFailed(ChildVaultError):
    """An import stopped on invalid rows; nothing from the invalid rows was written."""


class AccessDenied(ChildVaultError):
    """The acting user may not do this (role, passphrase, ownership)."""

    exit_code = 3


class WrongPassphrase(AccessDenied):
    """The passphrase does not open the identity file. Nothing was changed."""


class ApprovalInvalid(AccessDenied):
    """An approval token was rejected.

    Deliberately opaque: the caller learns only that the token is not valid for
    this read; the precise reason is written to the audit log.
    """

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            _t(
                "the approval token is not valid for this read "
                "(the reason is recorded in the audit log; ask the officer for a new approval)"
            ),
            detail=detail,
        )


class IntegrityError(ChildVaultError):
    """Stored data or the audit log failed an integrity check (tampering or a wrong key)."""

    exit_code = 4


class DecryptionFailed(IntegrityError):
    """A ciphertext, sealed box or key slot did not open.

    Deliberately opaque: which byte or which key failed is never shown.
    """

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            _t("stored data could not be decrypted: it was altered, moved, or the key is wrong"),
            detail=detail,
        )


class ProviderUnavailable(ChildVaultError):
    """The key provider (Vault/OpenBao) cannot be reached, is sealed, or refused the login."""

    exit_code = 5


class ExtraRequired(ConfigError):
    """An optional part of childvault is used but its extra is not installed.

    The message names the ``pip install`` command that adds it.
    """

    def __init__(self, extra: str, what: str) -> None:
        # ``what`` may itself be marked with _t: it is then translated with the rest.
        super().__init__(
            _t(
                "{what} needs the optional packages of childvault[{extra}]: "
                "run pip install 'childvault[{extra}]'",
                what=what,
                extra=extra,
            )
        )
        self.extra = extra
