"""Delta payloads: a signed operation list that updates a disk in place (format, apply)."""
