"""Measurements of artifacts: parity against torch, latency on their runtime (quality metrics come later)."""
