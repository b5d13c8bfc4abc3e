"""intsr: integer-only on-device adaptation of a super-resolution network."""
