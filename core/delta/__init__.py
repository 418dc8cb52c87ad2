"""Change detection: stable row fingerprints, the diff against the last state, the delta pass."""
