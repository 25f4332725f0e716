"""The ONNX toolkit that every ONNX-based runtime shares: the torch exporter, exact graph clean-ups, which torch
module each node came from, and passes over Q/DQ graphs."""
