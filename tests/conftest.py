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


@pytest.fixture(scope="module")
def module_generator_folder(tmp_path_factory):
    """One tiny generator folder for a module's expensive shared run (ptq, qat)."""
    from compressor.testing.models import write_model_folder

    return write_model_folder(tmp_path_factory.mktemp("model") / "tiny-generator", "generator")


@pytest.fixture
def decoder_folder(tmp_path):
    from compressor.testing.models import write_model_folder

    return write_model_folder(tmp_path / "tiny-decoder", "decoder")


_REAL_EXTRA_FILE = []


def pytest_configure(config):
    """The whole session runs as on a machine with no Inception weights anywhere (no env var, an empty torch
    hub cache, no [fid] extra), module-scoped fixtures included: runs skip FID (Inception runs ~7 images/s
    on 2 cores) and lookups are hermetic. Tests marked `fid` get the real [fid] extra back."""
    import tempfile

    from compressor.evaluate import fid

    os.environ.pop(fid.ENV_VAR, None)
    os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="compressor-tests-torch-home-")
    _REAL_EXTRA_FILE.append(fid._extra_file)
    fid._extra_file = lambda: None


def pytest_unconfigure(config):
    import shutil

    home = os.environ.get("TORCH_HOME", "")
    if "compressor-tests-torch-home-" in home:  # the empty hub cache pytest_configure made
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def _real_fid_weights_when_marked(request, monkeypatch):
    if "fid" in request.keywords:
        from compressor.evaluate import fid

        monkeypatch.setattr(fid, "_extra_file", _REAL_EXTRA_FILE[0])


@pytest.fixture(autouse=True)
def _compressor_logger_as_it_was():
    """The CLI sets up the 'compressor' logger for its own output (its handler, no propagation); an in-process
    CLI test must not leave that behind for tests that read warnings through caplog."""
    import logging

    logger = logging.getLogger("compressor")
    saved = (logger.propagate, list(logger.handlers), logger.level)
    yield
    logger.propagate, logger.handlers[:], logger.level = saved[0], saved[1], saved[2]


@pytest.fixture(autouse=True)
def _private_sensitivity_cache(tmp_path_factory, monkeypatch):
    """Each test session caches sensitivity tables in its own folder, never in the user's ~/.cache."""
    monkeypatch.setenv("COMPRESSOR_CACHE", str(tmp_path_factory.getbasetemp() / "compressor-cache"))
