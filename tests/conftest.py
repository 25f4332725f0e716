"""Shared fixtures: tiny model folders built from code, an offline environment, and the gpu marker."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("NNCF_CI", "1")  # no telemetry from NNCF, whichever test imports it first


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def generator_folder(tmp_path):
    from compressor.testing.models import write_model_folder

    return write_model_folder(tmp_path / "tiny-generator", "generator")


@pytest.fixture
def decoder_folder(tmp_path):
    from compressor.testing.models import write_model_folder

    return write_model_folder(tmp_path / "tiny-decoder", "decoder")
