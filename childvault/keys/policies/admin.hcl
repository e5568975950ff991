# childvault-admin: key rotation, retention sweeps, decommissioning.
# Never decrypt. Setup (mounts, keys, policies, audit devices) is NOT granted
# here: it needs a root or bootstrap token, because whoever can write policies
# can grant themselves decrypt.
# Placeholders ({transit}, {kv}, {key}) are filled by `childvault vault setup`.

# Rotation: add a key version, rewrap every DEK under it (no plaintext leaves
# Vault), then retire the old versions.
path "{transit}/keys/{key}/rotate" {
  capabilities = ["update"]
}
path "{transit}/rewrap/{key}" {
  capabilities = ["update"]
}
# Only the version floors may be changed: not exportable, not
# deletion_allowed, not allow_plaintext_backup.
path "{transit}/keys/{key}/config" {
  capabilities       = ["update"]
  allowed_parameters = {
    "min_decryption_version" = []
    "min_encryption_version" = []
  }
}
path "{transit}/keys/{key}/trim" {
  capabilities       = ["update"]
  allowed_parameters = {
    "min_available_version" = []
  }
}
path "{transit}/keys/{key}" {
  capabilities = ["read"]
}
path "{transit}/keys/{key}-index" {
  capabilities = ["read"]
}

# Blind-index values (e.g. for a retention sweep that looks records up).
path "{transit}/hmac/{key}-index" {
  capabilities = ["update"]
}

# Salts: read (rewrap needs the contexts), destroy (retention sweeps,
# decommissioning, `childvault vault gc`). No create or update.
path "{kv}/data/records/*" {
  capabilities = ["read"]
}
path "{kv}/destroy/records/*" {
  capabilities = ["update"]
}
# Shredding keeps the metadata as a tombstone (see the officer policy): read,
# list, and update of the tombstone mark only. No "delete".
path "{kv}/metadata/records/*" {
  capabilities       = ["read", "update", "list"]
  allowed_parameters = {
    "custom_metadata" = []
  }
}
path "{kv}/metadata/records" {
  capabilities = ["list"]
}

# `childvault doctor` checks that an audit device is enabled. Listing needs
# sudo on exactly this path; enabling one (sys/audit/<name>) stays root's.
path "sys/audit" {
  capabilities = ["read", "sudo"]
}

# `childvault audit reconcile` compares the wrapping accessors childvault
# logged with Vault's audit log, whose fields are HMAC'd per device: this
# computes that HMAC for a given input (it reveals nothing in the log).
path "sys/audit-hash/*" {
  capabilities = ["update"]
}

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

# Deliberately absent: {transit}/decrypt/{key}, {transit}/encrypt/{key}.
