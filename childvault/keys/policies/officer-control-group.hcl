# childvault-officer with a Vault Enterprise Control Group on decrypt: a
# second officer (a member of the identity group {approvers}) must authorise
# each wrapped decrypt in Vault before its answer can be unwrapped.
# NOT installed by default: `childvault vault setup --control-groups` first
# probes whether the server enforces Control Groups with a real controlled
# request, and refuses if it does not (OpenBao 2.x accepts the stanza but
# does not enforce it). Placeholders as in officer.hcl, plus {approvers}.
path "{transit}/decrypt/{key}" {
  capabilities     = ["update"]
  min_wrapping_ttl = "1s"
  max_wrapping_ttl = "{max_wrapping_ttl}"
  control_group = {
    factor "second-officer" {
      controlled_capabilities = ["update"]
      identity {
        group_names = ["{approvers}"]
        approvals   = 1
      }
    }
  }
}
