"""compressor: turn a trained generative model into checked, timed release artifacts for a named piece of hardware.

The public API is `compressor.api.run(RunConfig)`; `import compressor` stays light (no onnxruntime,
no heavy extras) so the CLI starts fast.
"""

__version__ = "0.1.0"
