"""A new task plugs into the generic run loop as a small class plus a recipe.

The toy denoiser below is a model family of its own (a causal conv net of about a thousand
parameters that predicts the noise added to speech) and a task with its own recipe section and its
own batches, all defined here, outside the package: it trains on samples/, resumes bit-exactly, is
evaluated through audiokit.evaluation and saves weights that load back by family.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audiokit.errors import RecipeError
from audiokit.models import AudioModel, ModelConfig
from audiokit.train.checkpoint import load_checkpoint
from audiokit.train.recipe import Recipe, load_recipe
from audiokit.train.task import Evaluation, Task, mean_scores, register_task
from audiokit.train.trainer import Trainer

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@dataclass
class ToyDenoiserConfig(ModelConfig):
    """``layers`` causal convs of ``kernel_size`` taps and ``hidden`` channels."""

    hidden: int = 8
    kernel_size: int = 9
    layers: int = 2


class ToyDenoiser(
    AudioModel,
    family="toy-denoiser",
    config_class=ToyDenoiserConfig,
    configs={"toy-denoiser-16k": ToyDenoiserConfig(name="toy-denoiser-16k", sample_rate=16000)},
):
    """``(B, 1, T)`` noisy audio -> ``(B, 1, T)``: the input minus the noise a causal conv net predicts."""

    def __init__(self, config: ToyDenoiserConfig) -> None:
        super().__init__(config)
        widths = [1] + [config.hidden] * config.layers
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, config.kernel_size) for a, b in zip(widths, widths[1:], strict=False)
        )
        self.out = nn.Conv1d(config.hidden, 1, 1)

    @property
    def algorithmic_latency(self) -> int:
        return 0

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        h = noisy
        for conv in self.convs:
            h = torch.tanh(conv(F.pad(h, (conv.kernel_size[0] - 1, 0))))
        return noisy - self.out(h)


@dataclass
class NoiseConfig:
    """White noise added to the speech crops at ``snr_db``."""

    snr_db: float = 5.0


@dataclass
class ToyRecipe(Recipe):
    noise: NoiseConfig = field(default_factory=NoiseConfig)


def add_noise(clean: torch.Tensor, snr_db: float, seed: list[int]) -> torch.Tensor:
    """``clean`` ``(..., T)`` plus white noise at ``snr_db``, a pure function of ``seed``."""
    noise = torch.from_numpy(np.random.default_rng(seed).standard_normal(clean.shape).astype(np.float32))
    scale = clean.square().mean(-1, keepdim=True).sqrt() / 10 ** (snr_db / 20)
    return clean + noise * scale


class NoisyCrops(torch.utils.data.Dataset):
    """The default crops with white noise added: ``{"input": noisy, "clean": clean}`` per step."""

    def __init__(self, crops: torch.utils.data.Dataset, snr_db: float, seed: int, rank: int) -> None:
        self.crops, self.snr_db, self.seed, self.rank = crops, snr_db, seed, rank

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        clean = self.crops[step]["clean"]
        return {"input": add_noise(clean, self.snr_db, [self.seed, self.rank, step]), "clean": clean}


@register_task
class ToyDenoiseTask(Task):
    name, family, recipe_type = "toy_denoise", "toy-denoiser", ToyRecipe

    def train_data(self) -> torch.utils.data.Dataset:
        return NoisyCrops(
            super().train_data(), self.recipe.noise.snr_db, self.recipe.run.seed, self.runtime.rank
        )

    def train_step(self, step: int, batch: dict[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
        noisy, clean = (batch[k].to(self.runtime.device) for k in ("input", "clean"))
        with self.runtime.autocast():
            loss = F.l1_loss(model(noisy).float(), clean)
        loss.backward()
        return {"loss/l1": loss.detach()}

    def evaluate(self, model: AudioModel, clips: list[tuple[str, torch.Tensor]]) -> Evaluation:
        noisy = [add_noise(wav, self.recipe.noise.snr_db, [index]) for index, (_, wav) in enumerate(clips)]
        enhanced = [model(x[None])[0] for x in noisy]
        rate = model.sample_rate
        record = {
            "noisy": mean_scores([(wav, x) for (_, wav), x in zip(clips, noisy, strict=True)], rate),
            "enhanced": mean_scores([(wav, y) for (_, wav), y in zip(clips, enhanced, strict=True)], rate),
        }
        return Evaluation(record, {"eval/si_sdr": record["enhanced"]["si_sdr"]})


RECIPE = f"""
task: toy_denoise
data: {{train: {SAMPLES}, valid: {SAMPLES}, glob: "speech_fr_16k_*", segment_seconds: 0.25, batch_size: 2}}
model: {{config: toy-denoiser-16k, options: {{hidden: 6}}}}
noise: {{snr_db: 0.0}}
optim: {{learning_rate: 3.0e-3}}
schedule: {{warmup_steps: 2, decay: cosine, total_steps: 8}}
eval: {{every_steps: 4, max_files: 1, max_seconds: 1.0}}
run: {{max_steps: 8, checkpoint_every: 4, log_every: 2, threads: 1, tensorboard: false}}
"""


@pytest.fixture
def recipe_path(tmp_path: Path) -> Path:
    path = tmp_path / "toy_denoise.yaml"
    path.write_text(RECIPE)
    return path


def test_a_new_task_trains_evaluates_and_saves_its_family(recipe_path, tmp_path):
    recipe = load_recipe(recipe_path)
    assert isinstance(recipe, ToyRecipe) and recipe.noise.snr_db == 0.0
    trainer = Trainer(recipe, tmp_path / "run", quiet=True)
    assert isinstance(trainer.model, ToyDenoiser) and trainer.model.config.hidden == 6
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.fit()
    trainer.close()
    assert result.step == 8 and np.isfinite(result.losses["loss/l1"])
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    # evaluated every 4 steps through audiokit.evaluation's metrics, recorded in eval.jsonl
    assert [e["step"] for e in result.evaluations] == [4, 8]
    lines = [json.loads(x) for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert lines == result.evaluations
    assert {"pesq", "stoi", "si_sdr"} <= set(lines[-1]["enhanced"]) and np.isfinite(
        lines[-1]["enhanced"]["si_sdr"]
    )
    assert abs(lines[-1]["noisy"]["si_sdr"]) < 1.0  # 0 dB SNR
    # the EMA weights load back as their own family, config included
    loaded = AudioModel.from_pretrained(tmp_path / "run" / "model.safetensors")
    assert isinstance(loaded, ToyDenoiser) and loaded.config == trainer.model.config
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["model"] == "toy-denoiser-16k" and info["sessions"][0]["end_step"] == 8


def test_a_new_task_resumes_bit_exactly(recipe_path, tmp_path):
    # 8 steps in one go == 4 steps, a new Trainer resuming, then 4 more
    Trainer(load_recipe(recipe_path, ["data.valid=null"]), tmp_path / "straight", quiet=True).fit()
    Trainer(load_recipe(recipe_path, ["data.valid=null"]), tmp_path / "split", quiet=True).fit(max_steps=4)
    resumed = Trainer(
        load_recipe(recipe_path, ["data.valid=null"]), tmp_path / "split", resume=True, quiet=True
    )
    assert resumed.step == 4 and resumed.fit().step == 8
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"]["module"][key], b["ema"]["module"][key]), key
    for state_a, state_b in zip(
        a["optimizers"]["model"]["state"].values(), b["optimizers"]["model"]["state"].values(), strict=True
    ):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert a["schedulers"] == b["schedulers"]


def test_a_task_section_and_the_model_family_are_checked_at_load(recipe_path):
    with pytest.raises(RecipeError, match=r"unknown key 'noise.snr'; did you mean 'snr_db'\?"):
        load_recipe(recipe_path, ["noise.snr=3"])
    with pytest.raises(RecipeError, match=r"unknown key 'model.options.hiden'; did you mean 'hidden'\?"):
        load_recipe(recipe_path, ["model.options.hiden=3"])
    with pytest.raises(RecipeError, match="is a codec model; task 'toy_denoise' trains toy-denoiser models"):
        load_recipe(recipe_path, ["model.config=speech-16k", "model.options=null"])
