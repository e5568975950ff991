# childvault-officer: approve disclosures, correct and shred records.
# Placeholders ({transit}, {kv}, {key}, {max_wrapping_ttl}) are filled by
# `childvault vault setup`.

# Decrypt only as a response-wrapped answer: the officer's client receives a
# single-use wrapping token that it seals to the requester, never a DEK.
# max_wrapping_ttl bounds how long released keys can wait to be redeemed.
path "{transit}/decrypt/{key}" {
  capabilities     = ["update"]
  min_wrapping_ttl = "1s"
  max_wrapping_ttl = "{max_wrapping_ttl}"
}

# Wrap the new data keys of corrected fields (and of records an officer adds).
path "{transit}/encrypt/{key}" {
  capabilities = ["update"]
}

# Blind-index values for searchable fields.
path "{transit}/hmac/{key}-index" {
  capabilities = ["update"]
}

# Key descriptions for `childvault doctor`; no key material.
path "{transit}/keys/{key}" {
  capabilities = ["read"]
}
path "{transit}/keys/{key}-index" {
  capabilities = ["read"]
}

# Record salts: read (to release), create (new records), update (a correction
# writes fresh salts for the corrected fields, with check-and-set).
path "{kv}/data/records/*" {
  capabilities = ["create", "read", "update"]
}

# A correction destroys the salt versions it replaced; a deletion request
# destroys every version of the salt document (crypto-shredding).
path "{kv}/destroy/records/*" {
  capabilities = ["update"]
}
# Shredding keeps the metadata as a tombstone (custom_metadata "shredded"),
# so its version counter stays and a check-and-set 0 write can never put a
# salt back. Read: which versions exist (no key material). Update: only the
# tombstone mark. No "delete": deleting the metadata would reset the counter.
path "{kv}/metadata/records/*" {
  capabilities       = ["read", "update"]
  allowed_parameters = {
    "custom_metadata" = []
  }
}

# Revoking a grant revokes its wrapping tokens by the accessors recorded at
# approval (the officer never keeps the tokens). Vault cannot limit this path
# to wrapping tokens: an officer who learns another token's accessor can
# revoke that token too (a denial of service, never a disclosure).
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}

# An officer may also be a requester of another officer's approval.
path "sys/wrapping/lookup" {
  capabilities = ["update"]
}
path "sys/wrapping/unwrap" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "sys/capabilities-self" {
  capabilities = ["update"]
}

# Deliberately absent: rewrap, key rotation and configuration.
