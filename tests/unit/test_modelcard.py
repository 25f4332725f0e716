"""The model card: conditioning inputs (integers, choices, fixed values) are drawn in their dtype, and cards that
cannot work (an int64 input with a normal prior, an input and an output sharing a name) fail when read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from compressor.calibration import load_calibration
from compressor.errors import ConfigError
from compressor.modelcard import ModelCard, load_card, sample_inputs

UNET_CARD = {
    "name": "unet",
    "family": "diffusion",
    "inputs": {
        "sample": {"shape": [4, 8, 8]},
        "timestep": {"shape": [], "dtype": "int64", "prior": "integers", "range": [0, 999]},
        "label": {"shape": [], "dtype": "int64", "prior": "choice", "values": [3, 7]},
        "guidance": {"shape": [1], "prior": "fixed", "value": 7.5},
        "mask": {"shape": [2], "prior": "uniform", "range": [0, 1]},
    },
    "outputs": {"noise": {"image": False}},
}


def test_each_prior_draws_in_its_dtype_and_range():
    samples = sample_inputs(ModelCard.model_validate(UNET_CARD), 256, seed=3)
    assert samples["sample"].dtype == torch.float32 and samples["sample"].shape == (256, 4, 8, 8)
    timestep = samples["timestep"]
    assert timestep.dtype == torch.int64 and timestep.shape == (256,)
    assert 0 <= int(timestep.min()) and int(timestep.max()) <= 999 and len(timestep.unique()) > 100
    assert set(samples["label"].tolist()) == {3, 7}
    assert torch.equal(samples["guidance"], torch.full((256, 1), 7.5))
    assert 0 <= float(samples["mask"].min()) and float(samples["mask"].max()) <= 1


def test_the_same_seed_draws_the_same_inputs():
    card = ModelCard.model_validate(UNET_CARD)
    first, again = sample_inputs(card, 4, seed=1), sample_inputs(card, 4, seed=1)
    assert all(torch.equal(first[name], again[name]) for name in first)


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"shape": [], "dtype": "int64"}, "int64 input needs an integers, choice or fixed prior"),
        ({"shape": [], "dtype": "int64", "prior": "integers"}, "needs 'range'"),
        ({"shape": [], "prior": "integers", "range": [0, 9]}, "needs dtype int64"),
        ({"shape": [], "prior": "fixed"}, "needs 'value'"),
        ({"shape": [], "prior": "normal", "value": 3}, "takes no ['value']"),
        ({"shape": [], "dtype": "int64", "prior": "choice", "values": [0.5]}, "whole numbers"),
    ],
)
def test_a_prior_that_cannot_work_is_refused_with_the_fix(tmp_path: Path, spec: dict, words: str):
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump({"inputs": {"t": spec}}))
    with pytest.raises(ConfigError) as info:
        load_card(path)
    message = str(info.value)
    assert str(path) in message and words in message and "\n" not in message


def test_an_input_and_an_output_with_one_name_are_refused_when_read(tmp_path: Path):
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump({"inputs": {"image": {"shape": [3, 8, 8]}}, "outputs": {"image": {}}}))
    with pytest.raises(ConfigError, match=r"\['image'\] named both an input and an output; rename one"):
        load_card(path)


def test_calibration_files_keep_integer_inputs_integer(tmp_path: Path):
    card = ModelCard.model_validate(UNET_CARD)
    arrays = {name: tensor.numpy() for name, tensor in sample_inputs(card, 64, seed=0).items()}
    np.savez(tmp_path / "calib.npz", **arrays)
    data = load_calibration(tmp_path / "calib.npz", card, minimum=64)
    assert data["timestep"].dtype == np.int64 and data["sample"].dtype == np.float32
    arrays["timestep"] = arrays["timestep"].astype(np.float32)
    np.savez(tmp_path / "floats.npz", **arrays)
    with pytest.raises(ConfigError, match="the model card says int64"):
        load_calibration(tmp_path / "floats.npz", card, minimum=64)


@pytest.mark.parametrize(
    "text, where",
    [
        ("name: tiny\ninputs: [unclosed\n", "at line 3, column 1 (expected ',' or ']', but got '<stream end>')"),
        ("name: tiny\ninputs:\n  z: {shape: [8]}\n   bad: 1\n",
         "at line 4, column 4 (expected <block end>, but found '<block mapping start>')"),
    ],
    ids=["unclosed", "indent"],
)
def test_a_card_with_a_yaml_syntax_error_names_the_line(tmp_path: Path, text: str, where: str):
    path = tmp_path / "compressor.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_card(path)
    assert info.value.message == f"{path}: not valid YAML {where}; fix the syntax"
