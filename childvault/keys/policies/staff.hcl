# childvault-staff: create and update records, never read them back.
# Placeholders ({transit}, {kv}, {key}) are filled by `childvault vault setup`.

# Wrap new field data keys. Only "update": "create" would let Transit upsert
# a missing key with default (non-derived) settings.
path "{transit}/encrypt/{key}" {
  capabilities = ["update"]
}

# Blind-index values for searchable fields (pinned key version, see settings).
path "{transit}/hmac/{key}-index" {
  capabilities = ["update"]
}

# Key descriptions (versions, flags) for `childvault doctor`; no key material.
path "{transit}/keys/{key}" {
  capabilities = ["read"]
}
path "{transit}/keys/{key}-index" {
  capabilities = ["read"]
}

# Record salts: create-only. Written once when a record is created
# (check-and-set 0). No "read": a staff token never gets an existing salt
# back, so it cannot copy salts to undo a later shredding (issue 14); adding
# field versions to an existing record is an officer correction. No "update":
# a salt is never replaced by staff, and no delete: only officers and admins
# shred.
path "{kv}/data/records/*" {
  capabilities = ["create"]
}

# Redeem an approval: check a wrapping token's origin, then unwrap it once.
path "sys/wrapping/lookup" {
  capabilities = ["update"]
}
path "sys/wrapping/unwrap" {
  capabilities = ["update"]
}

# Self-inspection for `childvault doctor` and error messages, so tokens
# created without the default policy still work.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "sys/capabilities-self" {
  capabilities = ["update"]
}

# Deliberately absent: {transit}/decrypt/{key}, rewrap, key rotation and
# configuration, KV destroy and metadata deletion.
