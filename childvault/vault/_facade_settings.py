"""The vault's own configuration: typed and signed settings, the notice register, and
the health checks ``doctor`` shows.

One facet of :class:`~._facade.Vault`, kept apart so each area of the API reads on its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal, overload

from childvault._i18n import _t, join
from childvault.keys import UsageError
from childvault.vault import _check as check
from childvault.vault import _settings
from childvault.vault._facade_base import VaultBase
from childvault.vault._time import parse_iso

if TYPE_CHECKING:
    # The result types are imported where a method builds one (issue 18: lazy loading).
    from childvault.vault._results import VaultSetting

#: Settings that are whole numbers (seconds or counts).
_INT_SETTINGS = frozenset({"max_ttl_s", "default_ttl_s", "max_records", "max_uses"})

#: What :meth:`Vault.setting` reads besides the signed settings (``_settings.SPECS``):
#: the vault's own ``meta`` rows that are settings (not its internal rows).
_META_SETTINGS = frozenset(
    {
        "accepting_records",
        "created_at",
        "institution",
        "notice_version",
        "provider",
        "schema_digest",
        "vault_id",
    }
)


class SettingsFacet(VaultBase):
    """The settings, notice and health methods of :class:`Vault`."""

    # The literal keys overlap ``str`` on purpose (as in typeshed's ``open``).
    @overload
    def setting(  # type: ignore[overload-overlap]
        self, key: Literal["max_ttl_s", "default_ttl_s", "max_records", "max_uses"]
    ) -> int: ...
    @overload
    def setting(self, key: Literal["created_at"]) -> datetime: ...  # type: ignore[overload-overlap]
    @overload
    def setting(self, key: Literal["accepting_records"]) -> bool: ...  # type: ignore[overload-overlap]
    @overload
    def setting(self, key: str) -> str: ...
    def setting(self, key: str) -> int | datetime | bool | str:
        """A vault-wide setting, typed: the approval limits (``max_ttl_s``,
        ``default_ttl_s``, ``max_records``, ``max_uses``) as ``int``,
        ``created_at`` as an aware ``datetime``, ``accepting_records`` as
        ``bool``, the others (``notice_version``, ``institution``, ...) as ``str``.
        An unknown name is a :class:`UsageError` naming the known ones."""
        w = self._live("Vault.setting")
        check.str_arg(w, "key", key)
        if key not in _settings.SPECS and key not in _META_SETTINGS:
            # A name the caller got wrong, as any unknown enum value (issue 18).
            raise UsageError(
                _t(
                    "unknown setting {key!r}: one of {keys}",
                    key=key,
                    keys=join(", ", sorted({*_settings.SPECS, *_META_SETTINGS})),
                )
            )
        value = self._session.setting(key)
        if key in _INT_SETTINGS:
            return int(value)
        if key == "created_at":
            return parse_iso(value)
        if key == "accepting_records":
            return value == "1"
        return value

    def set_setting(self, key: str, value: str, *, now: datetime | None = None) -> VaultSetting:
        """Sign and log setting ``key`` = ``value``; return it as it now stands.

        The approval limits (``max_ttl_s``, ``default_ttl_s``, ``max_records``,
        ``max_uses``) are an admin's to sign; the compliance settings
        (``consent_backdate_days``, ``time_zone``, ``rights_deadline_days.<kind>``,
        ``export_min_k``) an officer's. The value is validated (whole numbers in
        range, an IANA zone); the latest signed value is what every decision
        uses, never the ``meta`` row (docs/trust.md, "Settings and other meta rows").
        """
        w = self._live("Vault.set_setting")
        check.str_arg(w, "key", key)
        check.str_arg(w, "value", value)
        check.datetime_arg(w, "now", now)
        from childvault.vault._results import VaultSetting
        from childvault.vault._svc_settings import SettingsService

        return VaultSetting.from_json(SettingsService(self._session).set(key, value, now=now))

    def list_settings(self) -> list[VaultSetting]:
        """Every signed setting: its effective value, default, the role that signs
        it, its source (``signed`` or ``default``), who signed it, and the
        database row when that differs (ignored)."""
        self._live("Vault.list_settings")
        from childvault.vault._results import VaultSetting
        from childvault.vault._svc_settings import SettingsService

        return [VaultSetting.from_json(d) for d in SettingsService(self._session).listing()]

    def notices(self) -> dict[str, dict[str, str]]:
        """The register of published notices: version -> sha256, date, publisher."""
        self._live("Vault.notices")
        return self._notices.notices()

    def notice_sha256(self, version: str) -> str:
        """The SHA-256 of a published notice version; refuse an unpublished one."""
        w = self._live("Vault.notice_sha256")
        check.str_arg(w, "version", version)
        return self._notices.notice_sha256(version)

    def publish_notice(
        self,
        version: str,
        text: bytes,
        *,
        now: datetime | None = None,
        non_substantive: bool = False,
    ) -> dict[str, str]:
        """Admin: register a notice text (P-10) and make it the current version.

        Records consented under another version need fresh consent before an
        approval (``consent renew``) unless the change is ``non_substantive``.
        The text must name every P-10 item, the refusal option and the
        responsible person's contact. Publishing is logged with the text's hash.
        """
        w = self._live("Vault.publish_notice")
        check.str_arg(w, "version", version)
        check.instance(w, "text", text, bytes)
        check.datetime_arg(w, "now", now)
        check.instance(w, "non_substantive", non_substantive, bool)
        return self._notices.publish_notice(version, text, now=now, non_substantive=non_substantive)

    def health(self) -> list[tuple[str, str, str]]:
        """(check, ok|warn|fail, message) about users, keys and the provider, for doctor."""
        self._live("Vault.health")
        return self._health.health()
