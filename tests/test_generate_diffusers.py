"""txt2img / img2img / CLIP filter on a tiny random Stable Diffusion pipeline loaded from a folder."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synaug.errors import SynaugError
from synaug.generate import GenerateConfig, derive_seed, generate
from synaug.generate.base import plan_items, to_square
from synaug.generate.diffusers_backend import Img2ImgGenerator, load_pipeline, resolve_dtype
from synaug.generate.runner import build_prompt_fn
from synaug.generate.tiny import build_tiny_clip, build_tiny_sd, toy_image_manifest
from synaug.plan import Cell, Plan
from synaug.prompts import modifiers

CLASSES = ["cat", "dog", "truck"]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("m") / "tiny-sd", seed=0)


def _plan(counts=(3, 0, 4)):
    return Plan("class", CLASSES, [Cell(i, c, 5, n, attributes={"class": c})
                                   for i, (c, n) in enumerate(zip(CLASSES, counts))])


def _cfg(sd, **kw):
    return GenerateConfig(model=str(sd), steps=2, **kw)


def _pixels(m):
    out = []
    for p in m.abspaths():
        with Image.open(p) as im:
            out.append(np.asarray(im, dtype=np.int16))
    return np.stack(out)


def _digests(m):
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in m.abspaths()]


def test_txt2img_images_and_manifest(sd, tmp_path):
    plan = _plan()
    m = generate(plan, _cfg(sd, batch_size=3), tmp_path / "out", progress=False)
    assert len(m) == 7 and m.class_counts().tolist() == [3, 0, 4]
    m.validate(verify_files=True, expected_size=(32, 32))
    assert set(m.df["generator"]) == {"txt2img:tiny-sd"} and set(m.df["source"]) == {"synthetic"}
    mods = modifiers("cifar10")
    for _, r in m.df.iterrows():
        cell = plan.cells[r["label"]]
        idx = int(Path(r["path"]).stem)
        assert r["seed"] == derive_seed(0, cell.key, idx)
        assert r["prompt"].startswith("a photo of ") and r["prompt"].endswith(" " + r["class_name"])
        assert r["prompt"][len("a photo of "):-len(r["class_name"]) - 1] in mods[r["class_name"]]
    px = _pixels(m)
    assert px.shape == (7, 32, 32, 3) and px.std() > 5  # not blank
    assert len(set(_digests(m))) == 7  # every seed gives its own image


def test_same_seed_same_bytes_and_batch_size_independence(sd, tmp_path):
    plan = _plan((3, 1, 0))
    a = generate(plan, _cfg(sd, batch_size=4), tmp_path / "a", progress=False)
    b = generate(plan, _cfg(sd, batch_size=4), tmp_path / "b", progress=False)
    assert _digests(a) == _digests(b) and a.df.equals(b.df)
    # batch_invariant: each image denoised alone -> identical files whatever the batch size
    c = generate(plan, _cfg(sd, batch_size=1, batch_invariant=True), tmp_path / "c", progress=False)
    d = generate(plan, _cfg(sd, batch_size=3, batch_invariant=True), tmp_path / "d", progress=False)
    assert _digests(c) == _digests(d)
    # default batching: same seeds and prompts; pixels equal up to float rounding of batched kernels
    e = generate(plan, _cfg(sd, batch_size=1), tmp_path / "e", progress=False)
    for col in ("path", "seed", "prompt"):
        assert a.df[col].tolist() == e.df[col].tolist()
    diff = np.abs(_pixels(a) - _pixels(e))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01
    # another run seed gives other images
    f = generate(plan, _cfg(sd, batch_size=4, seed=1), tmp_path / "f", progress=False)
    assert not set(_digests(f)) & set(_digests(a))


def test_resize_to_dataset_resolution(sd, tmp_path):
    plan = _plan((2, 0, 0))
    big = generate(plan, _cfg(sd, batch_size=2), tmp_path / "big", progress=False)
    small = generate(plan, _cfg(sd, batch_size=2, resolution=12), tmp_path / "small", progress=False)
    small.validate(verify_files=True, expected_size=(12, 12))
    for p, q in zip(big.abspaths(), small.abspaths()):
        with Image.open(p) as a, Image.open(q) as b:
            assert np.array_equal(np.asarray(to_square(a, 12, "lanczos")), np.asarray(b))


def test_img2img_intra_and_inter(sd, tmp_path):
    real = toy_image_manifest(tmp_path / "real", CLASSES, 3)
    plan = _plan((3, 0, 2))
    made = {}
    for mode in ("intra", "inter"):
        cfg = _cfg(sd, backend="img2img", batch_size=5, img2img={"mode": mode, "strength": 0.8})
        m = generate(plan, cfg, tmp_path / mode, real_manifest=real, progress=False)
        assert len(m) == 5 and set(m.df["generator"]) == {f"img2img-{mode}:tiny-sd"}
        m.validate(verify_files=True, expected_size=(32, 32))
        made[mode] = _digests(m)
        gen = Img2ImgGenerator(load_pipeline(cfg, "img2img"), cfg, plan, real)
        items = plan_items(plan, build_prompt_fn(plan, cfg), cfg.seed)
        guides = [gen.guide_of(it) for it in items]
        for it, g in zip(items, guides):
            guide_class = Path(g).relative_to(tmp_path / "real").parts[0]
            if mode == "intra":
                assert guide_class == it.cell.class_name
            else:  # inter: any real image, regardless of the class (tests/test_reference_baselines.py)
                assert guide_class in CLASSES
        assert guides == [gen.guide_of(it) for it in items]  # deterministic
    assert not set(made["intra"]) & set(made["inter"])  # the guide changes the image
    with pytest.raises(SynaugError, match="needs the real manifest"):
        generate(plan, _cfg(sd, backend="img2img"), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_clip_filter_keeps_best_attempt(sd, tmp_path):
    clip = build_tiny_clip(tmp_path / "clip")
    plan = _plan((1, 0, 2))
    keep_all = generate(plan, _cfg(sd, batch_size=4, clip_filter={"enabled": True, "model": str(clip),
                                                                   "threshold": -1.0}),
                        tmp_path / "pass", progress=False)
    base = [derive_seed(0, plan.cells[lab].key, int(Path(p).stem))
            for lab, p in zip(keep_all.df["label"], keep_all.df["path"])]
    assert keep_all.df["seed"].tolist() == base
    cfg = _cfg(sd, batch_size=4, clip_filter={"enabled": True, "model": str(clip), "threshold": 2.0,
                                              "max_retries": 2})
    m = generate(plan, cfg, tmp_path / "strict", progress=False)
    from synaug.generate.clip_filter import ClipScorer
    from synaug.generate.diffusers_backend import Txt2ImgGenerator

    scorer = ClipScorer(str(clip))
    gen = Txt2ImgGenerator(load_pipeline(cfg, "txt2img"), cfg)
    items = plan_items(plan, build_prompt_fn(plan, cfg), cfg.seed)
    for it, seed in zip(items, m.df["seed"]):
        seeds = [derive_seed(0, it.cell.key, it.index, attempt=a) for a in range(3)]
        scores = [scorer.score(gen.generate([it], [s]), [it.cell.class_name])[0] for s in seeds]
        assert seed == seeds[int(np.argmax(scores))]
    assert (m.df["seed"].to_numpy() != np.asarray(base)).any()


def test_pipeline_loading_options(sd, tmp_path):
    pipe = load_pipeline(_cfg(sd, scheduler="euler"))
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.safety_checker is None
    pipe = load_pipeline(_cfg(sd))
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"
    import torch

    assert resolve_dtype("auto", "cuda:0") == torch.float16 and resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert load_pipeline(_cfg(sd, dtype="bf16")).unet.dtype == torch.bfloat16


def test_bad_models_fail_in_one_line(sd, tmp_path):
    plan = _plan()
    (tmp_path / "empty").mkdir()
    cases = [(str(tmp_path / "nope"), "model folder not found"),
             (str(tmp_path / "empty"), "no model_index.json"),
             ("nobody-here/no-such-model", "cannot load model 'nobody-here/no-such-model'")]
    for model, msg in cases:
        with pytest.raises(SynaugError, match=msg) as e:
            generate(plan, GenerateConfig(model=model, local_files_only=True), tmp_path / "out", progress=False)
        assert "\n" not in str(e.value)
        assert not (tmp_path / "out").exists()


def test_cli_txt2img_no_modifiers(sd, tmp_path):
    import yaml

    from synaug.cli import main
    from synaug.manifest import Manifest

    _plan((2, 1, 0)).write(tmp_path / "plan.json")
    (tmp_path / "gen.yaml").write_text(f"model: {sd}\nsteps: 2\nbatch_size: 2\n")
    rc = main(["generate", "--plan", str(tmp_path / "plan.json"), "--config", str(tmp_path / "gen.yaml"),
               "--no-modifiers", "--no-progress"])
    assert rc == 0
    out = tmp_path / "synthetic"  # default: next to the plan
    m = Manifest.read(out / "synthetic.parquet", verify_files=True)
    assert m.df["prompt"].tolist() == ["a photo of cat", "a photo of cat", "a photo of dog"]
    assert yaml.safe_load((out / "generate.yaml").read_text())["modifiers"] == "none"
