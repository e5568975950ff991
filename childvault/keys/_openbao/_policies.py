"""Names of the three childvault policies, and how error messages name them.

The policy texts live in ``childvault/keys/policies/*.hcl`` (rendered by
:func:`childvault.keys._openbao._setup.render_policies`); docs/vault.md
section 4 says what each role may do.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ADMIN",
    "ANY_ROLE",
    "OFFICER",
    "OFFICER_OR_ADMIN",
    "POLICY_NAMES",
    "ROOT",
    "STAFF",
    "STAFF_OR_OFFICER",
]

#: Role -> Vault policy name written by :func:`childvault.keys._openbao.setup`.
POLICY_NAMES: Mapping[str, str] = {
    "staff": "childvault-staff",
    "officer": "childvault-officer",
    "admin": "childvault-admin",
}

# What a permission-denied message says the token needs (the second half of
# the ``need=(capability, policy)`` pair given to ``Connection.call``).
STAFF = "the childvault-staff policy"
OFFICER = "the childvault-officer policy"
ADMIN = "the childvault-admin policy"
STAFF_OR_OFFICER = "the childvault-staff or childvault-officer policy"
OFFICER_OR_ADMIN = "the childvault-officer or childvault-admin policy"
ANY_ROLE = "one of the childvault-staff, childvault-officer or childvault-admin policies"
ROOT = "a root or bootstrap token (setup is beyond the childvault-admin policy on purpose)"
