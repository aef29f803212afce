"""The enhancer ablation's --variant settings: list values keep their commas."""

from __future__ import annotations

from conftest import load_benchmark


def test_variant_settings_split_outside_brackets() -> None:
    split_settings = load_benchmark("enhancer_ablation").split_settings
    assert split_settings("") == []
    assert split_settings("a=1,b=2") == ["a=1", "b=2"]
    assert split_settings("model.options.noise_floor_rise=[5.0,20.0],losses.vad=0.1") == [
        "model.options.noise_floor_rise=[5.0,20.0]",
        "losses.vad=0.1",
    ]
    assert split_settings("x=[[1,2],[3,4]],y=z") == ["x=[[1,2],[3,4]]", "y=z"]
