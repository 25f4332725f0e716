"""The sensitivity table: one row per channel group and per layer, deeper cuts hurt more, cached by hash."""

from __future__ import annotations

from compressor.config import resolve
from compressor.evaluate.fid import InceptionFeatures
from compressor.modelcard import ModelCard
from compressor.release.sensitivity_view import channel_rows, precision_rows, reading, write_heatmap
from compressor.sensitivity import analyse
from compressor.testing.fake_inception import write_fake_inception
from compressor.testing.models import DCGANGenerator, card_dict, randomized


def _card() -> ModelCard:
    return ModelCard.model_validate(card_dict("dcgan", 16) | {"inputs": {"z": {"shape": [16, 1, 1], "prior": "normal"}},
                                                              "outputs": {"image": {"shape": [3, 64, 64], "range": [-1, 1]}}})


def test_every_group_and_layer_gets_a_row_and_deeper_cuts_hurt_more():
    model = randomized(DCGANGenerator(nz=16, ngf=32))  # every group wider than the target's 16-channel step
    table = analyse(model, _card(), resolve("cpu").target, ratios=[0.25, 0.75], samples=16, seed=0)
    assert set(table["channels"]) == {"main.0", "main.3", "main.6", "main.9"}
    assert table["not_prunable"] == {"main.12": "its channels are a model output"}
    for row in table["channels"].values():
        light, deep = row["settings"]["0.25"], row["settings"]["0.75"]
        assert deep["kept"] < light["kept"] and deep["macs_fraction"] < light["macs_fraction"] <= 1
        assert deep["psnr_db"] < light["psnr_db"] and "fd_surrogate" in deep
    assert set(table["precision"]) == {"main.0", "main.3", "main.6", "main.9", "main.12"}
    assert all(0 < row["int8"]["psnr_db"] < 150 for row in table["precision"].values())  # changed (finite), not broken


def test_a_second_analysis_of_the_same_model_and_settings_comes_from_the_cache():
    model = randomized(DCGANGenerator(nz=16, ngf=8))
    first = analyse(model, _card(), resolve("cpu").target, ratios=[0.5], samples=16, seed=0)
    second = analyse(model, _card(), resolve("cpu").target, ratios=[0.5], samples=16, seed=0)
    other = analyse(model, _card(), resolve("cpu").target, ratios=[0.5], samples=16, seed=1)
    assert (first["cached"], second["cached"], other["cached"]) == (False, True, False)
    assert first["channels"] == second["channels"]


def test_the_table_reads_as_rows_a_sentence_and_a_heatmap(tmp_path):
    table = analyse(randomized(DCGANGenerator(nz=16, ngf=32)), _card(), resolve("cpu").target, ratios=[0.5], samples=16, seed=0)
    header, rows = channel_rows(table)
    assert header[:2] == ["group", "channels"] and [row[0] for row in rows] == list(table["channels"])
    assert rows[0][2].endswith("x)") and " dB (" in rows[0][2]  # PSNR (kept, MACs kept)
    header, rows = precision_rows(table)
    assert header == ["layer", "int8"] and len(rows) == len(table["precision"])
    sentence = reading(table)
    worst_layer = min(table["precision"], key=lambda layer: table["precision"][layer]["int8"]["psnr_db"])
    assert "hurts least in `main." in sentence and f"most sensitive to rounding is `{worst_layer}`" in sentence
    png = write_heatmap(table, tmp_path / "heat.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000  # drawn, not an empty canvas


def test_fid_when_asked_scores_every_setting_and_shows_beside_the_psnr(tmp_path):
    model, target = randomized(DCGANGenerator(nz=16, ngf=32)), resolve("cpu").target
    plain = analyse(model, _card(), target, ratios=[0.5], samples=16, seed=0)
    table = analyse(model, _card(), target, ratios=[0.5], samples=16, seed=0,
                    fid=InceptionFeatures(write_fake_inception(tmp_path / "inception.pt")))
    assert not table["cached"]  # asking for FID is a different table, not the cached one without it
    cells = [row["settings"]["0.5"] for row in table["channels"].values()] + [row["int8"] for row in table["precision"].values()]
    assert all(cell["fid"] > 0 for cell in cells) and "fid" not in plain["channels"]["main.0"]["settings"]["0.5"]
    assert {name: row["settings"]["0.5"]["psnr_db"] for name, row in table["channels"].items()} == {
        name: row["settings"]["0.5"]["psnr_db"] for name, row in plain["channels"].items()}  # FID adds, changes nothing
    assert ", FID " in channel_rows(table)[1][0][2] and ", FID " in precision_rows(table)[1][0][1]
    assert ", FID " not in channel_rows(plain)[1][0][2]
