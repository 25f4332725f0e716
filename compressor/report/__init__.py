"""Reports are a pure function of the manifest: they format what was measured and never recompute it."""
