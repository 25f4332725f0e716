"""Tiny models built from code, for tests and docs (seconds to run, no files needed)."""
