"""Safe loading: weights are safetensors, nothing is unpickled from files a user hands in, no remote
code is trusted and configs are data.

Two kinds of proof: a scan of the source (AST) that fails when someone adds an unsafe loader,
and behaviour - malicious files (pickles that would run ``touch MARKER``) are refused with one
line and the marker never appears.
"""
from __future__ import annotations

import ast
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synaug.errors import SynaugError
from synaug.manifest import Manifest

SRC = Path(__file__).resolve().parents[1] / "src" / "synaug"
SYNAUG = Path(sys.executable).parent / "synaug"
WEIGHT_EXTS = {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".npy", ".npz", ".joblib"}


class Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"data": Evil(marker)}, protocol=2)


# one torch thread, as the CLI subprocesses get (OMP_NUM_THREADS=1 from conftest)
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- outputs
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from synaug.train import (
        FinetuneConfig,
        TrainConfig,
        finetune_last_layer,
        train_model,
    )
    from synaug.train.toydata import make_toy_manifest

    d = tmp_path_factory.mktemp("safe")
    tr = make_toy_manifest(d / "img", [10, 6], size=16, seed=0)
    va = make_toy_manifest(d / "img", [2, 2], size=16, seed=1, split="val")
    m = Manifest.concat([tr, va])
    cfg = TrainConfig.model_validate({"epochs": 2, "batch_size": 8, "model": {"width": 4}, "progress": False,
                                      "data": {"cache_dir": str(d / "cache")}})
    res = train_model(m, None, cfg, d / "run")
    finetune_last_layer(res.model, m, FinetuneConfig.model_validate(
        {"epochs": 1, "progress": False, "data": {"cache_dir": str(d / "cache")}}), d / "run" / "ft")
    return d / "run"


def test_checkpoints_are_safetensors_only(trained):
    from safetensors import safe_open

    files = [p for p in trained.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in WEIGHT_EXTS], "pickle-based weight file in a run folder"
    weights = [p for p in files if p.suffix == ".safetensors"]
    names = {str(p.relative_to(trained)) for p in weights}
    assert {"model.safetensors", "epoch_0001.safetensors", "epoch_0001.state.safetensors",
            "ft/model.safetensors"} <= names
    for p in weights:  # each is a real safetensors file (8-byte header length + JSON header)
        head = p.read_bytes()[:9]
        assert head[8:9] == b"{", p
        with safe_open(str(p), framework="pt") as f:
            assert list(f.keys())
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".yaml", ".parquet"}


def test_a_pickle_posing_as_a_checkpoint_is_refused(tmp_path):
    from synaug.cli import main
    from synaug.train import load_checkpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "model.safetensors"
    evil.write_bytes(_evil_pickle(marker))
    with pytest.raises(SynaugError, match="cannot read checkpoint"):
        load_checkpoint(evil)
    (tmp_path / "m.csv").write_text("path,label,split\na.png,0,test\n")
    assert main(["evaluate", "--checkpoint", str(evil), "--manifest", str(tmp_path / "m.csv"),
                 "--out", str(tmp_path / "ev")]) == 2
    torch.save({"w": Evil(marker)}, tmp_path / "model.pt")  # torch's own format is not accepted either
    with pytest.raises(SynaugError):
        load_checkpoint(tmp_path / "model.pt")
    assert not marker.exists() and not (tmp_path / "ev").exists()


def test_a_pickled_decode_cache_is_ignored_not_loaded(tmp_path):
    from synaug.train.data import cache_key, decode_manifest
    from synaug.train.toydata import make_toy_manifest

    m = make_toy_manifest(tmp_path / "img", [3, 2], size=8, seed=0)
    cache = tmp_path / "cache"
    cache.mkdir()
    marker = tmp_path / "pwned"
    bad = cache / f"{cache_key(m.abspaths(), None)}.npy"
    np.save(bad, np.array([Evil(marker)], dtype=object), allow_pickle=True)
    x = decode_manifest(m, cache_dir=cache)
    assert x.shape == (5, 3, 8, 8) and x.dtype == torch.uint8
    assert not marker.exists()
    assert np.load(bad).shape == (5, 3, 8, 8)  # rebuilt as a plain uint8 array


# ---------------------------------------------------------------------------- diffusers
def test_pipeline_weights_load_only_from_safetensors(tmp_path):
    """A pipeline folder whose UNet weights exist only as a (malicious) pickle is refused."""
    from synaug.generate import GenerateConfig
    from synaug.generate.diffusers_backend import load_pipeline
    from synaug.generate.tiny import build_tiny_sd

    sd = build_tiny_sd(tmp_path / "sd")
    assert load_pipeline(GenerateConfig(model=str(sd))).unet is not None  # the safetensors folder loads
    marker = tmp_path / "pwned"
    bad = tmp_path / "sd-bin"
    shutil.copytree(sd, bad)
    (bad / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (bad / "unet" / "diffusion_pytorch_model.bin").write_bytes(_evil_pickle(marker))
    with pytest.raises(SynaugError, match="cannot load model"):
        load_pipeline(GenerateConfig(model=str(bad)))
    assert not marker.exists()


# ---------------------------------------------------------------------------- configs are data
EVIL_YAML = "epochs: !!python/object/apply:os.system ['touch {marker}']\n"


def test_yaml_object_tags_are_rejected_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text(EVIL_YAML.format(marker=marker))
    (tmp_path / "m.csv").write_text("path,label,split\na.png,0,train\n")
    r = subprocess.run([str(SYNAUG), "train", "-c", str(tmp_path / "evil.yaml"), "--train-manifest",
                        str(tmp_path / "m.csv"), "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("synaug: error: ") and "is not valid YAML" in r.stderr
    assert "python/object/apply:os.system" in r.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [
    ["run", "{cfg}", "--out", "{out}"],
    ["generate", "--plan", "{plan}", "--config", "{cfg}", "--out", "{out}"],
    ["generate", "--plan", "{plan}", "--out", "{out}", "--set", "seed=!!python/object/apply:os.system ['touch {marker}']"],
    ["train", "--train-manifest", "{csv}", "--out", "{out}", "--set",
     "epochs=!!python/object/apply:os.system ['touch {marker}']"],
], ids=["run-config", "generate-config", "generate-override", "train-override"])
def test_no_config_path_executes_code(tmp_path, capsys, argv):
    from synaug.cli import main
    from synaug.plan import Cell, Plan

    marker = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text(EVIL_YAML.format(marker=marker))
    Plan("class", ["a"], [Cell(0, "a", 1, 1)]).write(tmp_path / "plan.json")
    (tmp_path / "m.csv").write_text("path,label,split\na.png,0,train\n")
    fill = {"cfg": tmp_path / "evil.yaml", "out": tmp_path / "out", "plan": tmp_path / "plan.json",
            "csv": tmp_path / "m.csv", "marker": marker}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("synaug: error: ") and "not valid YAML" in err, err
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- CIFAR pickles
def test_cifar_reader_refuses_code_but_reads_arrays(tmp_path):
    from synaug.data.cifar import safe_unpickle

    marker = tmp_path / "pwned"
    for payload in (_evil_pickle(marker), pickle.dumps(np.array([Evil(marker)], dtype=object), protocol=2),
                    pickle.dumps({"f": eval}, protocol=4), pickle.dumps({"f": getattr}, protocol=2)):
        with pytest.raises(SynaugError, match="refusing to load global"):
            safe_unpickle(payload, "batch")
    assert not marker.exists()
    ok = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 0], b"batch_label": "x"}
    for proto in (2, 4):
        d = safe_unpickle(pickle.dumps(ok, protocol=proto), "batch")
        assert set(d) == {"data", "labels", "batch_label"} and d["data"].tolist() == ok[b"data"].tolist()


# ---------------------------------------------------------------------------- source scan
def _py_files():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30  # the scan looks at the real package
    return files


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    parts.append(func.id if isinstance(func, ast.Name) else "?")  # "?": a call result, subscript, ...
    return ".".join(reversed(parts))


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _kwargs_dicts(tree, call) -> list:
    """``dict(...)`` / ``{...}`` assigned (or ``.update``d) to the names ``call`` unpacks with ``**``."""
    names = {k.value.id for k in call.keywords if k.arg is None and isinstance(k.value, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in names for t in node.targets):
            found.append(node.value)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update"
                and _name(node.func).split(".")[0] in names):
            found.append(node)
    return found


def _sets_true(nodes, key) -> bool:
    for n in nodes:
        if isinstance(n, ast.Call) and any(k.arg == key and _is_true(k.value) for k in n.keywords):
            return True
        if isinstance(n, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == key and _is_true(v)
                                           for k, v in zip(n.keys, n.values)):
            return True
    return False


def test_source_scan_loaders():
    problems = []
    from_pretrained = 0
    for f in _py_files():
        text = f.read_text()
        tree = ast.parse(text)
        rel = f.relative_to(SRC)
        if re.search(r"trust_remote_code\s*=\s*True", text):
            problems.append(f"{rel}: trust_remote_code=True")
        for call in _calls(tree):
            name = _name(call.func)
            if name.endswith("torch.load") and not _is_true(_kw(call, "weights_only")):
                problems.append(f"{rel}:{call.lineno}: torch.load without weights_only=True")
            if name.endswith("from_pretrained"):
                from_pretrained += 1
                rc = _kw(call, "trust_remote_code")
                if rc is not None and not (isinstance(rc, ast.Constant) and rc.value is False):
                    problems.append(f"{rel}:{call.lineno}: from_pretrained with trust_remote_code")
                holder = name.split(".")[0]
                if re.search(r"(Processor|Tokenizer|FeatureExtractor|ImageProcessor)$", holder):
                    continue  # no weights in these
                if not (_is_true(_kw(call, "use_safetensors")) or _sets_true(_kwargs_dicts(tree, call),
                                                                               "use_safetensors")):
                    problems.append(f"{rel}:{call.lineno}: {name} without use_safetensors=True")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
                problems.append(f"{rel}:{call.lineno}: {name} (use yaml.safe_load)")
            if name in ("pickle.load", "pickle.loads", "pd.read_pickle", "pandas.read_pickle", "joblib.load",
                        "eval", "exec", "marshal.loads", "dill.load", "dill.loads"):
                problems.append(f"{rel}:{call.lineno}: {name}")
            if name in ("np.load", "numpy.load") and _kw(call, "allow_pickle") is not None:
                problems.append(f"{rel}:{call.lineno}: np.load with allow_pickle")
            if name.endswith("create_model") and _is_true(_kw(call, "trust_remote_code")):
                problems.append(f"{rel}:{call.lineno}: create_model with remote code")
        for node in ast.walk(tree):  # subclassing pickle.Unpickler is only OK for the restricted reader
            if isinstance(node, ast.ClassDef) and any(_name(b).endswith("Unpickler") for b in node.bases):
                if not any(isinstance(n, ast.FunctionDef) and n.name == "find_class" for n in node.body):
                    problems.append(f"{rel}:{node.lineno}: Unpickler without a restricting find_class")
    assert not problems, "\n".join(problems)
    assert from_pretrained >= 2  # the diffusers pipeline and the CLIP filter are scanned


def test_source_scan_catches_unsafe_code(tmp_path, monkeypatch):
    """The scanner above is not vacuous: it flags a planted unsafe module."""
    pkg = tmp_path / "synaug"
    shutil.copytree(SRC, pkg)
    (pkg / "planted.py").write_text(
        "import torch, yaml\nfrom transformers import AutoModel\n"
        "def f(p):\n    torch.load(p)\n    yaml.load(open(p))\n"
        "    AutoModel.from_pretrained(p, trust_remote_code=True)\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    with pytest.raises(AssertionError) as e:
        test_source_scan_loaders()
    msg = str(e.value)
    assert "torch.load without weights_only" in msg and "yaml.load" in msg and "trust_remote_code" in msg
    assert "without use_safetensors" in msg


def test_config_files_and_overrides_are_parsed_as_data(tmp_path):
    from synaug import config

    marker = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text(EVIL_YAML.format(marker=marker))
    with pytest.raises(SynaugError, match="is not valid YAML"):
        config.read_yaml(tmp_path / "evil.yaml")
    with pytest.raises(SynaugError, match="not valid YAML"):
        config.parse_override(f"a=!!python/object/apply:os.system ['touch {marker}']")
    with pytest.raises(SynaugError, match="not valid YAML"):
        config.parse_override("a=[1,")  # malformed values are one-line errors too, not tracebacks
    assert not marker.exists()
    assert config.parse_override("a.b=0.5") == ("a.b", 0.5)
    assert config.parse_override("pool.manifest=heldout") == ("pool.manifest", "heldout")
