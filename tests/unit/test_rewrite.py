"""BatchNorm folding is exact, and the rewrite stage refuses a rewrite that changes the outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from compressor import rewrites
from compressor.config import resolve
from compressor.context import RunContext
from compressor.errors import CompressorError
from compressor.modelcard import ModelCard
from compressor.rewrites import fold_batchnorm
from compressor.stages.rewrite import RewriteConfig
from compressor.testing.models import TinyDecoder, TinyGenerator, card_dict, randomized


def _batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_folds_every_batchnorm_of_the_generator_exactly():
    model = randomized(TinyGenerator())
    z = torch.randn(5, 8)
    folded, names = fold_batchnorm(model)
    assert sorted(names) == ["blocks.0", "blocks.3"]
    assert _batchnorms(folded) == 0 and _batchnorms(model) == 2
    torch.testing.assert_close(folded(z), model(z), rtol=1e-5, atol=1e-6)


def test_linear_view_batchnorm_folds_into_linear_rows():
    model = randomized(TinyGenerator())
    folded, _ = fold_batchnorm(model)
    assert not torch.equal(folded.project.weight, model.project.weight)  # the BN after the view went into it


def test_conv_followed_by_non_batchnorm_is_left_alone():
    model = randomized(TinyDecoder())
    folded, names = fold_batchnorm(model)
    assert names == []
    z = torch.randn(3, 4)
    torch.testing.assert_close(folded(z), model(z))


def test_batchnorm_with_two_readers_is_not_folded():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # conv output read twice: folding would change the second reader

    model = randomized(Branchy())
    folded, names = fold_batchnorm(model)
    assert names == []
    x = torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(folded(x), model(x))


def _context(model: nn.Module, latent: int, tmp_path) -> RunContext:
    card = ModelCard.model_validate(card_dict("tiny", latent))
    return RunContext.create(model, card, resolve("cpu"), tmp_path)


def test_stage_records_what_it_folded_and_the_output_change(tmp_path):
    model = randomized(TinyGenerator())
    result = RewriteConfig().run(model, _context(model, 8, tmp_path))
    assert len(result.state["applied"]["fold_batchnorm"]) == 2
    assert result.metrics["relative_change"] < 1e-5


def test_stage_refuses_a_rewrite_that_changes_outputs(tmp_path, monkeypatch):
    def broken(model, example):
        model = TinyGenerator()  # fresh random weights: clearly not the same function
        return model.eval(), ["everything"]

    monkeypatch.setitem(rewrites.REWRITES, "fold_batchnorm", broken)
    model = randomized(TinyGenerator())
    with pytest.raises(CompressorError, match="changed the outputs"):
        RewriteConfig().run(model, _context(model, 8, tmp_path))


def test_stage_records_an_untraceable_model_as_skipped(tmp_path, caplog):
    class DataDependent(TinyGenerator):
        def forward(self, z):
            if z.sum() > 0:  # control flow on values: neither torch.fx nor torch.export can follow it
                return super().forward(z)
            return super().forward(-z)

    model = randomized(DataDependent())
    result = RewriteConfig().run(model, _context(model, 8, tmp_path))
    assert "fold_batchnorm" in result.state["skipped"]
    assert result.model is model
    assert "torch.fx" in caplog.text and "torch.export" in caplog.text  # the user is told, not only the manifest


def test_unknown_rewrite_name_is_refused_when_resolving_the_config():
    with pytest.raises(CompressorError, match=r"stages.rewrite.passes: unknown rewrite\(s\) \['teleport'\]"):
        resolve("cpu", sets=["stages.rewrite.passes=[teleport]"])


def test_unknown_rewrite_name_is_an_error(tmp_path):
    model = randomized(TinyGenerator())
    with pytest.raises(CompressorError, match="unknown rewrite"):
        RewriteConfig(passes=["teleport"]).run(model, _context(model, 8, tmp_path))
