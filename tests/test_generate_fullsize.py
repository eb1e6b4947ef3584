"""Full-size random Stable Diffusion pipelines (synaug.generate.fullsize): built from the published
configs on the meta device only (shapes, no memory, never run on this CPU), with the published
parameter counts; ``model: random:...`` in ``synaug generate``; UNet memory format / compile knobs."""
from __future__ import annotations

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
