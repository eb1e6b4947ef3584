"""Full-size random Stable Diffusion pipelines (synaug.generate.fullsize): built from the published
configs with the published parameter counts (on the meta device: shapes only); ``model: random:...``
in ``synaug generate``; UNet memory format / compile knobs; and (slow) SD 1.5 really making an image
on the CPU through ``synaug generate``, with the fp16 cast path run as far as a CPU allows."""
from __future__ import annotations

import os

import pytest
import torch

from synaug.errors import SynaugError
from synaug.generate import GenerateConfig
from synaug.generate.diffusers_backend import check_model, load_pipeline, model_label, native_size
from synaug.generate.fullsize import ARCHS, PUBLISHED_MILLIONS, build_random_sd, parameter_counts


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_full_size_pipeline_builds_with_the_published_parameter_counts(arch):
    pipe = build_random_sd(arch, device="meta")
    assert next(pipe.unet.parameters()).device.type == "meta"          # nothing allocated
    counts = parameter_counts(pipe)
    # "860M UNet and 123M text encoder" (CompVis/stable-diffusion README, SD 1.x);
    # "865M UNet" (Stability-AI/stablediffusion README, SD 2.x)
    # (the statements round 859.5M up and truncate 865.9M: within 1M of the stated figure)
    for part, millions in PUBLISHED_MILLIONS[arch].items():
        assert abs(counts[part] / 1e6 - millions) < 1, (part, counts[part])
    assert 83e6 < counts["vae"] < 84e6                                  # KL-f8 autoencoder (both)
    # the pieces fit together as in the real model: 512 px native, f8 latents, text width = cross-attention
    assert native_size(pipe) == 512 and pipe.vae_scale_factor == 8
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.unet.config.in_channels == pipe.vae.config.latent_channels == 4
    assert pipe.text_encoder.config.vocab_size == 49408 and len(pipe.tokenizer) < 49408


def test_sd2_differs_where_the_published_configs_do():
    a, b = build_random_sd("sd15", "meta"), build_random_sd("sd21-base", "meta")
    assert (a.unet.config.cross_attention_dim, b.unet.config.cross_attention_dim) == (768, 1024)
    assert not a.unet.config.use_linear_projection and b.unet.config.use_linear_projection
    assert (a.text_encoder.config.num_hidden_layers, b.text_encoder.config.num_hidden_layers) == (12, 23)


def test_random_model_names_in_generate_configs():
    assert check_model(GenerateConfig(model="random:sd15")) == "random:sd15"
    assert model_label("random:sd21-base") == "random:sd21-base"
    with pytest.raises(SynaugError, match="random pipelines are random:sd15, random:sd21-base, random:tiny"):
        check_model(GenerateConfig(model="random:sdxl"))


def test_tiny_random_pipeline_with_memory_format_and_compile_knobs():
    cfg = GenerateConfig(model="random:tiny", steps=2, device="cpu", channels_last=True, compile_unet=True)
    pipe = load_pipeline(cfg, "txt2img", "cpu")
    w = pipe.unet.conv_in.weight if hasattr(pipe.unet, "conv_in") else pipe.unet._orig_mod.conv_in.weight
    assert w.is_contiguous(memory_format=torch.channels_last)
    assert type(pipe.unet).__name__ == "OptimizedModule"                 # compiled lazily, at first call
    plain = load_pipeline(GenerateConfig(model="random:tiny", steps=2, device="cpu"), "img2img", "cpu")
    assert type(plain).__name__ == "StableDiffusionImg2ImgPipeline"
    assert plain.unet.conv_in.weight.is_contiguous() and type(plain.scheduler).__name__ == "DPMSolverMultistepScheduler"


def test_generate_runs_on_the_tiny_random_pipeline(tmp_path):
    from synaug.generate import generate
    from synaug.manifest import Manifest
    from synaug.plan import Cell, Plan

    plan = Plan("class", ["cat", "dog"], [Cell(0, "cat", 3, 2, attributes={"class": "cat"}),
                                          Cell(1, "dog", 4, 1, attributes={"class": "dog"})])
    cfg = GenerateConfig(model="random:tiny", steps=2, device="cpu", batch_size=2)
    generate(plan, cfg, tmp_path / "out", progress=False)
    m = Manifest.read(tmp_path / "out" / "synthetic.parquet")
    assert len(m) == 3 and set(m.df["generator"]) == {"txt2img:random:tiny"}


# ---------------------------------------------------------------------------- full size, really run
# CI size: one 64 px image (an 8 x 8 latent, the smallest the UNet's three downsamplings allow),
# 2 DPM++ steps; SYNAUG_FULL=1 also runs the fp16 pipeline end to end (its VAE decode in fp16 takes
# minutes on a CPU without fp16 arithmetic).
FULL = os.environ.get("SYNAUG_FULL") == "1"


def _one_image_plan(path):
    from synaug.plan import Cell, Plan

    Plan("class", ["cat"], [Cell(0, "cat", 0, 1, attributes={"class": "cat"})]).write(path)
    return path


def _spy_pipelines(monkeypatch) -> list:
    """Keep the pipelines ``synaug generate`` loads (the runner imports ``load_pipeline`` at call time)."""
    import synaug.generate.diffusers_backend as db

    built, real = [], db.load_pipeline

    def spy(cfg, kind="txt2img", device="cpu"):
        built.append(real(cfg, kind, device))
        return built[-1]

    monkeypatch.setattr(db, "load_pipeline", spy)
    return built


def _generate_one(tmp_path, monkeypatch, dtype: str):
    import numpy as np
    from PIL import Image

    from synaug.cli import main
    from synaug.manifest import Manifest

    built = _spy_pipelines(monkeypatch)
    cfg = tmp_path / "gen.yaml"
    cfg.write_text(f"model: random:sd15\ndevice: cpu\ndtype: {dtype}\ngen_size: 64\nsteps: 2\nresolution: 32\n"
                   "modifiers: none\n")
    rc = main(["generate", "--plan", str(_one_image_plan(tmp_path / "plan.json")), "--config", str(cfg),
               "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0
    m = Manifest.read(tmp_path / "out" / "synthetic.parquet", verify_files=True)
    assert len(m) == 1 and m.df["generator"].tolist() == ["txt2img:random:sd15"]
    img = np.asarray(Image.open(m.abspaths()[0]))
    assert img.shape == (32, 32, 3) and img.std() > 1      # an image, not a constant fill
    return built[0]


@pytest.mark.slow
def test_full_size_sd15_makes_an_image_on_the_cpu_through_synaug_generate(tmp_path, monkeypatch):
    """random:sd15 (the published SD 1.5 UNet, VAE and text encoder with random weights, 1.07 B
    parameters) through `synaug generate`: prompt encoding, classifier-free guidance (7.5),
    DPM++, VAE decode, resize, PNG and manifest."""
    pipe = _generate_one(tmp_path, monkeypatch, "auto")
    counts = parameter_counts(pipe)
    assert abs(counts["unet"] / 1e6 - PUBLISHED_MILLIONS["sd15"]["unet"]) < 1
    assert pipe.unet.dtype == torch.float32 and pipe.unet.device.type == "cpu"   # auto on the CPU: fp32
    # the preflight's size of this model is the memory the pipeline that ran really holds
    from synaug.generate.preflight import check_generation

    found = check_generation(GenerateConfig(model="random:sd15", device="cpu"))
    assert found.params == counts and found.dtype == "fp32"
    assert found.weight_bytes == _weight_bytes(pipe)


def _weight_bytes(pipe) -> int:
    return sum(p.numel() * p.element_size() for k in ("unet", "vae", "text_encoder") for p in getattr(pipe, k).parameters())


@pytest.mark.slow
def test_full_size_sd15_fp16_cast_runs_as_far_as_the_cpu_allows(tmp_path, monkeypatch):
    """dtype: fp16 as a GPU run uses it: built in fp32, cast by load_pipeline; every weight is
    fp16 (half the bytes) and the fp16 text encoder and UNet run a denoising step on the CPU.
    The fp16 VAE decode (minutes here) runs end to end only with SYNAUG_FULL=1."""
    if FULL:
        pipe = _generate_one(tmp_path, monkeypatch, "fp16")
    else:
        pipe = load_pipeline(GenerateConfig(model="random:sd15", dtype="fp16", device="cpu", steps=1), "txt2img", "cpu")
    weights = [p for k in ("unet", "vae", "text_encoder") for p in getattr(pipe, k).parameters()]
    assert {p.dtype for p in weights} == {torch.float16}
    assert abs(_weight_bytes(pipe) / 1e9 - 2.13) < 0.01                  # 1.07 B x 2 bytes
    from synaug.generate.preflight import check_generation                 # what the preflight announces

    assert check_generation(GenerateConfig(model="random:sd15", device="cpu", dtype="fp16")).weight_bytes == \
        _weight_bytes(pipe)
    if not FULL:
        gen = torch.Generator("cpu").manual_seed(0)
        with torch.inference_mode():
            latents = pipe(prompt=["a photo of cat"], num_inference_steps=1, guidance_scale=1.0, height=64, width=64,
                           generator=[gen], output_type="latent").images
        assert latents.shape == (1, 4, 8, 8) and latents.dtype == torch.float16 and torch.isfinite(latents).all()
