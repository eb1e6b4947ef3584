"""Own data, second pass (issue 20): every row of the issue's table as a CLI test.

Data: a small dataset of a kind the project has never seen, as a new user would bring it:
four classes of 16x16 one-channel (grayscale) PNGs with a long tail, a CSV naming them, and a
pool folder of extra images. Commands run in-process through ``synaug.cli.main`` (the entry
point's code) with stdout / stderr captured; ``synaug sweep`` starts real subprocesses.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from synaug.cli import main
from synaug.manifest import Manifest

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["zero", "one", "two", "three"]
TRAIN_COUNTS = [8, 4, 2, 1]
TEST_PER_CLASS = 2
POOL_PER_CLASS = 8
TRAIN = {"epochs": 1, "batch_size": 16, "model": {"name": "resnet32", "width": 4}, "progress": False,
         "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}}


def cli(*args, cwd=None):
    """``synaug ARGS`` in-process; a CompletedProcess with the captured output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(cwd or os.getcwd()):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse usage errors
            rc = e.code
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def one_line(r) -> str:
    lines = [x for x in r.stderr.strip().splitlines() if not x.startswith("synaug: warning:")]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("synaug: error: "), r.stderr
    return lines[0]


def png(path: Path, seed: int, size=(16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 256, (size[1], size[0]), dtype=np.uint8), "L").save(path)
    return path


def write_cfg(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """``photos/{train,test}/<class>/*.png`` (grayscale), ``photos.csv`` (path, class_name,
    split), ``pool/<class>/*.png``."""
    base = tmp_path_factory.mktemp("own2")
    rows, seed = [], 0
    for c, name in enumerate(CLASSES):
        for split, n in (("train", TRAIN_COUNTS[c]), ("test", TEST_PER_CLASS)):
            for i in range(n):
                seed += 1
                rel = f"{split}/{name}/{i:03d}.png"
                png(base / "photos" / rel, seed)
                rows.append({"path": rel, "class_name": name, "split": split})
        for i in range(POOL_PER_CLASS):
            seed += 1
            png(base / "pool" / name / f"p{i}.png", seed)
    pd.DataFrame(rows).to_csv(base / "photos.csv", index=False)
    return base


def own_copy(ws: Path, dest: Path) -> Path:
    """A private copy of the photos and their CSV (a test may edit both)."""
    shutil.copytree(ws / "photos", dest / "photos")
    shutil.copy(ws / "photos.csv", dest / "photos.csv")
    return dest


def run_cfg(**kw) -> dict:
    cfg = {"name": "own2", "data": {"manifest": "../photos.csv", "root": "../photos"}, "plan": {"mode": "class"},
           "generate": {"backend": "pool", "resolution": 16, "pool": {"manifest": "../pool"}}, "train": dict(TRAIN)}
    cfg.update(kw)
    return cfg


def stats(folder: Path) -> dict:
    """relative path -> (inode, mtime_ns, bytes) of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*.png"))}


# ---------------------------------------------------------------------------- row 1: bad files, changed plans
def test_bad_files_are_listed_before_generation_and_a_fixed_csv_keeps_unchanged_cells(ws, tmp_path):
    d = own_copy(ws, tmp_path)
    shutil.copytree(ws / "pool", d / "pool")
    cfg = write_cfg(d / "cfg" / "run.yaml", run_cfg())
    out = d / "run"
    r = cli("run", cfg, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    images = out / "synthetic" / "images"
    before = stats(images)
    model_mtime = (out / "train" / "model.safetensors").stat().st_mtime_ns
    # the user edits the CSV: one photo of "two" removed (its cell needs one more synthetic image),
    # one of "one" added (its cell needs one less), and two rows that cannot be used
    df = pd.read_csv(d / "photos.csv")
    df = df.drop(df.index[(df["path"] == "train/two/001.png")])
    png(d / "photos" / "train/one/new.png", 999)
    good_rows = [{"path": "train/one/new.png", "class_name": "one", "split": "train"}]
    raw = (d / "photos" / "train/two/000.png").read_bytes()
    (d / "photos" / "train/two/cut.png").write_bytes(raw[: len(raw) // 2])  # a truncated PNG
    bad_rows = [{"path": "train/one/missing.png", "class_name": "one", "split": "train"},
                {"path": "train/two/cut.png", "class_name": "two", "split": "train"}]
    edited = pd.concat([df, pd.DataFrame(good_rows + bad_rows)], ignore_index=True)
    edited.to_csv(d / "photos.csv", index=False)
    n = len(edited)
    r = cli("run", cfg, "--out", out)
    msg = one_line(r)
    assert f"2 of {n} images of data.manifest photos.csv cannot be used" in msg
    assert f"line {n} 'train/one/missing.png': file not found" in msg
    assert f"line {n + 1} 'train/two/cut.png': cannot decode" in msg
    assert "/../" not in msg and str((d / "photos").resolve()) in msg
    assert stats(images) == before  # nothing generated (or removed) before the error
    assert (out / "train" / "model.safetensors").stat().st_mtime_ns == model_mtime
    fresh = d / "fresh-bad"
    one_line(cli("run", cfg, "--out", fresh))
    assert not fresh.exists()  # refused before anything was written: no folder, no synthetic image

    # the fix: the bad rows removed; the plan changes by one image in two classes
    pd.concat([df, pd.DataFrame(good_rows)], ignore_index=True).to_csv(d / "photos.csv", index=False)
    r = cli("run", cfg, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    after = stats(images)
    planned = json.loads((out / "plan.json").read_text())["cells"]
    # classes are the sorted names: one, three, two, zero
    assert [c["synthetic"] for c in planned] == [3, 7, 7, 0]  # was [4, 7, 6, 0]
    assert set(before) - set(after) == {"0/000003.png"}        # "one" needs one image less
    assert set(after) - set(before) == {"2/000006.png"}        # "two" one more: the only image made
    assert all(after[k] == before[k] for k in set(before) & set(after))  # kept: same file, untouched
    assert "still match and are kept" in r.stderr
    # identical to a fresh generation of the fixed CSV: files, manifest rows, training manifest
    fresh = d / "fresh"
    assert cli("run", cfg, "--out", fresh).returncode == 0
    assert {k: v[2] for k, v in stats(fresh / "synthetic" / "images").items()} == {k: v[2] for k, v in after.items()}
    a = Manifest.read(out / "synthetic" / "synthetic.parquet").df
    b = Manifest.read(fresh / "synthetic" / "synthetic.parquet").df
    pd.testing.assert_frame_equal(a, b)
    ta, tb = (Manifest.read(x / "data" / "train.parquet").df[["path", "label", "source"]] for x in (out, fresh))
    pd.testing.assert_frame_equal(ta, tb)
    # the cache keys agree with what is on disk: a rerun does nothing
    r = cli("run", cfg, "--out", out)
    assert r.returncode == 0
    for stage in ("data", "plan", "generate", "train"):
        assert f"[{stage}] up to date, skipped" in r.stdout


def test_generation_update_keeps_matching_txt2img_images_and_equals_a_fresh_one(tmp_path):
    """The same at the runner, with a diffusers text-to-image pipeline (random weights, built in
    code): a changed plan keeps every image whose cell, index, seed and prompt match."""
    from synaug.errors import SynaugError
    from synaug.generate.config import GenerateConfig
    from synaug.generate.runner import generate
    from synaug.plan import Cell, Plan

    cfg = GenerateConfig.model_validate({"backend": "txt2img", "model": "random:tiny", "steps": 2, "resolution": 16,
                                         "modifiers": "none", "task": "plain", "template": "a photo of {class}",
                                         "batch_size": 4, "batch_invariant": True})

    def plan(counts):
        return Plan("class", CLASSES, [Cell(c, CLASSES[c], n, k, attributes={"class": CLASSES[c]})
                                       for c, (n, k) in enumerate(zip(TRAIN_COUNTS, counts))])

    out = tmp_path / "g"
    generate(plan([1, 3, 2, 0]), cfg, out, progress=False)
    before = stats(out / "images")
    with pytest.raises(SynaugError, match="--update"):
        generate(plan([1, 2, 4, 1]), cfg, out, progress=False)
    generate(plan([1, 2, 4, 1]), cfg, out, progress=False, update=True)
    after = stats(out / "images")
    assert set(before) - set(after) == {"1/000002.png"}
    assert set(after) - set(before) == {"2/000002.png", "2/000003.png", "3/000000.png"}
    assert all(after[k] == before[k] for k in set(before) & set(after))
    generate(plan([1, 2, 4, 1]), cfg, tmp_path / "fresh", progress=False)
    assert {k: v[2] for k, v in stats(tmp_path / "fresh" / "images").items()} == {k: v[2] for k, v in after.items()}
    pd.testing.assert_frame_equal(Manifest.read(out / "synthetic.parquet").df,
                                  Manifest.read(tmp_path / "fresh" / "synthetic.parquet").df)


# ---------------------------------------------------------------------------- rows 2 + 3: schedule, amp=off
def _train_manifest(ws: Path, d: Path) -> Path:
    m = Manifest.read(ws / "photos.csv", root=ws / "photos").split("train")
    return m.write(d / "train.parquet")


def test_default_schedule_decays_a_short_run_and_late_milestones_are_warned(ws, tmp_path):
    # a config file in its own folder: its relative cache_dir is read relative to it; `off` as typed
    write_cfg(tmp_path / "cfgs" / "train.yaml", {"batch_size": 16, "model": {"width": 4}, "progress": False,
                                                "data": {"cache_dir": "cache"}})
    (tmp_path / "cfgs" / "train.yaml").write_text((tmp_path / "cfgs" / "train.yaml").read_text() + "cuda_graph: off\n")
    m = _train_manifest(ws, tmp_path)
    r = cli("train", "--config", tmp_path / "cfgs" / "train.yaml", "--train-manifest", m, "--out", tmp_path / "t",
            "--set", "epochs=10", "--set", "schedule.warmup_epochs=1", "--set", "amp=off", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lr = [h["lr"] for h in json.loads((tmp_path / "t" / "history.json").read_text())]
    assert lr == pytest.approx([0.1] * 8 + [0.001, 0.00001])  # lr x0.01 at 80 % of the run, x1e-4 at 90 %
    assert "warning" not in r.stderr
    resolved = yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())
    assert resolved["amp"] == "off" and resolved["cuda_graph"] == "off"
    assert list((tmp_path / "cfgs" / "cache").glob("*.npy"))  # relative to the config file
    # absolute milestones past the last epoch: one warning line, before training
    r = cli("train", "--train-manifest", m, "--out", tmp_path / "t2", "--set", "epochs=2", "--set", "progress=false",
            "--set", "model.width=4", "--set", "schedule.milestones=[160, 180]", "--set", "batch_size=16")
    assert r.returncode == 0, r.stderr[-3000:]
    warn = [x for x in r.stderr.splitlines() if "warning" in x]
    assert len(warn) == 1 and "schedule.milestones: epoch 160 is past the last epoch" in warn[0]
    assert "fractions of the run" in warn[0]


def test_train_help_documents_model_width_and_schedule_defaults():
    r = cli("train", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for needle in ("model.width 16", "schedule.warmup_epochs 5", "schedule.milestones [0.8, 0.9]",
                   "schedule.factors [0.01, 0.0001]", "fractions of epochs"):
        assert needle in text, needle


def _validated(model, *sets: str, data: dict | None = None):
    """``model`` from ``data`` with ``--set`` texts applied, as the CLI reads them."""
    from synaug.config import parse_override, set_dotted, validate

    data = dict(data or {})
    for text in sets:
        set_dotted(data, *parse_override(text))
    return validate(model, data)


@pytest.mark.parametrize("value", ["off", "no", "false"])
def test_yaml_booleans_reach_string_keys_as_typed(value, tmp_path):
    """Every string-valued choice key whose choices include a YAML 1.1 boolean word takes it as
    typed, in a config file and through --set (``amp: off``, ``cuda_graph: off``)."""
    from typing import Literal, get_args, get_origin

    from synaug.run import RunConfig

    def literal_keys(model, prefix=""):
        for name, f in model.model_fields.items():
            ann = f.annotation
            sub = next((a for a in (ann, *get_args(ann)) if isinstance(a, type) and hasattr(a, "model_fields")), None)
            if sub is not None:
                yield from literal_keys(sub, f"{prefix}{name}.")
            lits = [a for a in (ann, *get_args(ann)) if get_origin(a) is Literal]
            if lits and "off" in get_args(lits[0]) and bool not in get_args(ann):
                yield prefix + name

    keys = list(literal_keys(RunConfig))
    assert "train.amp" in keys and "train.cuda_graph" in keys
    for key in keys:
        cfg = _validated(RunConfig, f"{key}={value}")
        section = cfg
        for part in key.split("."):
            section = getattr(section, part)
        assert section == "off", key


# ---------------------------------------------------------------------------- row 4: mixed sizes
def test_mixed_image_sizes_are_listed_with_counts_and_the_key_that_fixes_them(ws, tmp_path):
    d = tmp_path
    for c, name in enumerate(CLASSES):
        for split, n in (("train", TRAIN_COUNTS[c] + 3), ("test", 2)):
            for i in range(n):
                size = (16, 16) if i < n - 2 or split == "test" else ((12, 12) if i == n - 2 else (14, 14))
                png(d / "photos" / split / name / f"{i:03d}.png", 100 * c + i, size)  # 000.png is 16x16
    cfg = write_cfg(d / "cfg" / "run.yaml", run_cfg(data={"dataset": "imagefolder", "root": "../photos"},
                                                    generate={"backend": "pool", "resolution": 16,
                                                              "pool": {"manifest": str(ws / "pool")}}))
    r = cli("run", cfg, "--out", d / "run")
    msg = one_line(r)
    n16 = sum(n + 3 - 2 for n in TRAIN_COUNTS) + 2 * len(CLASSES)
    assert f"the real images have 3 sizes: 16x16 ({n16}), 12x12 (4), 14x14 (4)" in msg
    assert "set train.data.image_size (e.g. 16)" in msg
    assert not list(d.rglob("images/*/*.png"))  # found before any synthetic image was written
    r = cli("run", cfg, "--out", d / "run", "--set", "train.data.image_size=16")
    assert r.returncode == 0, r.stderr[-3000:]


# ---------------------------------------------------------------------------- rows 5 + 6: labels and names
def test_a_class_name_with_two_labels_names_the_rows(ws, tmp_path):
    pd.DataFrame({"path": ["train/zero/000.png", "train/one/000.png", "train/zero/001.png"],
                  "label": [0, 1, 42], "class_name": ["zero", "one", "zero"]}).to_csv(tmp_path / "m.csv", index=False)
    msg = one_line(cli("inspect", "--manifest", tmp_path / "m.csv", "--data-root", ws / "photos"))
    assert "line 4 gives class 'zero' label 42, but line 2 gives it label 0" in msg


def test_a_mistyped_label_without_names_is_an_error(ws, tmp_path):
    df = pd.read_csv(ws / "photos.csv")
    df["label"] = df["class_name"].map({c: i for i, c in enumerate(CLASSES)})
    df.loc[5, "label"] = 42
    df[["path", "label", "split"]].to_csv(tmp_path / "labels.csv", index=False)
    msg = one_line(cli("inspect", "--manifest", tmp_path / "labels.csv", "--data-root", ws / "photos"))
    assert "labels must be 0..K-1" in msg and "label 42 (line 7" in msg and "leaves labels 4, 5, 6, 7, 8, ..." in msg


# ---------------------------------------------------------------------------- row 7: --help examples
HELP_MODELS = {"train": "synaug.train.config:TrainConfig", "finetune": "synaug.train.config:FinetuneConfig",
               "generate": "synaug.generate.config:GenerateConfig", "run": "synaug.run:RunConfig",
               "sweep": "synaug.run:RunConfig"}


def _model(spec: str):
    import importlib

    mod, name = spec.split(":")
    return getattr(importlib.import_module(mod), name)


@pytest.mark.parametrize("command", sorted(HELP_MODELS))
def test_every_set_example_of_a_help_text_is_valid(command):
    r = cli(command, "--help")
    assert r.returncode == 0
    examples = [x for x in re.findall(r"--set ([\w.\-]+=\S+)", " ".join(r.stdout.split())) if not x.startswith("KEY=VALUE")]
    assert examples, r.stdout
    for ex in examples:
        _validated(_model(HELP_MODELS[command]), ex.rstrip(",;)"))


def test_generate_help_example_config_is_valid():
    from synaug.generate.config import GenerateConfig

    text = cli("generate", "--help").stdout
    block = text.split("example gen.yaml:\n", 1)[1].split("\n\n", 1)[0]
    example = yaml.safe_load("\n".join(x[2:] for x in block.splitlines()))
    assert example["backend"] == "txt2img"
    _validated(GenerateConfig, data=example)


def test_a_wrong_set_key_is_blamed_on_the_set_not_the_file(tmp_path):
    (tmp_path / "ft.yaml").write_text("epochs: 2\n")
    msg = one_line(cli("finetune", "--config", tmp_path / "ft.yaml", "--checkpoint", tmp_path / "none",
                       "--manifest", tmp_path / "none.csv", "--out", tmp_path / "o", "--set", "optim.lr=0.05"))
    assert msg.startswith("synaug: error: --set optim.lr=0.05: unknown key 'optim'") and "lr" in msg


# ---------------------------------------------------------------------------- row 8: relative paths in a generate config
def test_generate_config_paths_are_relative_to_the_config_file(ws, tmp_path):
    assert cli("plan", "--manifest", ws / "photos.csv", "--data-root", ws / "photos", "--out",
               tmp_path / "plan.json").returncode == 0
    shutil.copytree(ws / "pool", tmp_path / "mine" / "pool")
    write_cfg(tmp_path / "mine" / "cfgs" / "gen.yaml", {"backend": "pool", "resolution": 16,
                                                        "pool": {"manifest": "../pool"}})
    (tmp_path / "elsewhere").mkdir()
    r = cli("generate", "--plan", tmp_path / "plan.json", "--config", tmp_path / "mine" / "cfgs" / "gen.yaml",
            "--out", tmp_path / "syn", "--no-progress", cwd=tmp_path / "elsewhere")
    assert r.returncode == 0, r.stderr
    assert len(Manifest.read(tmp_path / "syn" / "synthetic.parquet")) == sum(8 - n for n in TRAIN_COUNTS)


# ---------------------------------------------------------------------------- row 9: pool too small
def test_a_pool_too_small_says_how_to_go_on_and_replacement_fills_it(ws, tmp_path):
    shutil.copytree(ws / "pool", tmp_path / "pool")
    for p in sorted((tmp_path / "pool" / "three").glob("*.png"))[2:]:
        p.unlink()  # "three" needs 7 images, the pool has 2
    cfg = write_cfg(tmp_path / "cfg" / "run.yaml", run_cfg(data={"manifest": str(ws / "photos.csv"),
                                                                 "root": str(ws / "photos")}))
    msg = one_line(cli("run", cfg, "--out", tmp_path / "run"))
    assert "cannot fill class 'three': the plan needs 7 images, the pool has 2" in msg
    assert "plan.target" in msg and "to 3 or less" in msg and "generate.pool.replacement: true" in msg
    r = cli("run", cfg, "--out", tmp_path / "run", "--set", "generate.pool.replacement=true")
    assert r.returncode == 0, r.stderr[-3000:]
    syn = Manifest.read(tmp_path / "run" / "synthetic" / "synthetic.parquet").df
    three = syn[syn["class_name"] == "three"]["source_file"]
    assert len(three) == 7 and set(three) == {"three/p0.png", "three/p1.png"}


# ---------------------------------------------------------------------------- rows 10, 12, 13: a fairness run
@pytest.fixture(scope="module")
def group_run(tmp_path_factory):
    """A CSV with a made-up group column (two classes), txt2img with random weights."""
    d = tmp_path_factory.mktemp("groups")
    rows, seed = [], 0
    counts = {("cat", "indoor"): 6, ("cat", "outdoor"): 2, ("dog", "indoor"): 2, ("dog", "outdoor"): 5}
    for (c, g), n in counts.items():
        for split, k in (("train", n), ("test", 4)):
            for i in range(k):
                seed += 1
                rel = f"{split}/{c}-{g}-{i}.png"
                png(d / "photos" / rel, seed)
                rows.append({"path": rel, "class_name": c, "group_name": g, "split": split})
    pd.DataFrame(rows).to_csv(d / "photos.csv", index=False)
    cfg = write_cfg(d / "cfg" / "run.yaml", run_cfg(
        plan={"mode": "cell"},
        generate={"backend": "txt2img", "model": "random:tiny", "steps": 2, "resolution": 16, "task": "plain",
                  "template": "a photo of {class}", "modifiers": "none", "batch_size": 8}))
    r = cli("run", cfg, "--out", d / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    return d / "run", r


def test_run_reports_lead_with_fairlearn_and_give_the_paper_reading_beside(group_run):
    from fairlearn.metrics import (demographic_parity_difference, equal_opportunity_difference,
                                   equalized_odds_difference)

    out, _ = group_run
    f = json.loads((out / "metrics.json").read_text())["results"]["trained"]["fairness"]
    pred = pd.read_csv(out / "eval" / "train" / "predictions.csv")
    y, p, g = pred["label"], pred["pred"], pred["group"]
    assert f["headline"]["set"] == "fairlearn" and f["paper_reading"]["set"] == "paper"
    assert f["headline"]["DP"] == pytest.approx(demographic_parity_difference(y, p, sensitive_features=g))
    assert f["headline"]["EO"] == pytest.approx(equal_opportunity_difference(y, p, sensitive_features=g))
    assert f["headline"]["ED"] == pytest.approx(equalized_odds_difference(y, p, sensitive_features=g))
    assert f["paper_reading"]["DP"] == f["demographic_parity_population"]
    assert f["paper_reading"]["ED"] == f["equalized_odds_mean"]
    md = (out / "report.md").read_text()
    assert "Fairness gaps: fairlearn's definitions" in md and "trained, paper reading" in md
    row = next(x for x in md.splitlines() if x.startswith("| ED |"))
    assert f"{f['headline']['ED']:.4f}" in row and f"{f['equalized_odds_mean']:.4f}" in row


def test_random_weight_generators_are_marked_in_the_terminal_and_the_report(group_run):
    out, r = group_run
    assert "random weights (txt2img:random:tiny): they are noise, not meaningful" in r.stderr
    s = json.loads((out / "metrics.json").read_text())
    assert s["random_weights"] and "RANDOM WEIGHTS" in s["generator"]
    md = (out / "report.md").read_text()
    assert "WARNING: the synthetic images come from a generator with random weights" in md
    assert "random weights: not meaningful" in r.stdout  # the summary table's generator column


def test_reports_name_classes_beside_counts_and_show_resolved_paths(group_run):
    out, r = group_run
    md = (out / "report.md").read_text()
    assert "Real training counts per class: cat 8, dog 7; after uniformization: cat 11, dog 11." in md
    assert "/../" not in md and "/../" not in r.stdout
    assert f"report: {(out / 'report.html').resolve()}" in r.stdout


# ---------------------------------------------------------------------------- row 11: sweep over seeds
def test_sweep_over_seeds_adds_a_mean_std_row_per_config(ws, tmp_path):
    cfg = write_cfg(tmp_path / "cfg" / "tiny.yaml", run_cfg(
        data={"manifest": str(ws / "photos.csv"), "root": str(ws / "photos")}, generate=None))
    exe = Path(sys.executable).parent / "synaug"
    r = subprocess.run([str(exe), "sweep", str(cfg), "--seeds", "0", "1", "--per-device", "2", "--out",
                        str(tmp_path / "sw")], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-3000:]
    md = (tmp_path / "sw" / "comparison.md").read_text()
    tops = [float(json.loads((tmp_path / "sw" / f"tiny-s{s}" / "metrics.json").read_text())["results"]["trained"]["top1"])
            for s in (0, 1)]
    row = next(x for x in md.splitlines() if x.startswith("| tiny (mean ± std, 2 runs) | trained |"))
    assert f"{100 * np.mean(tops):.2f} ± {100 * np.std(tops, ddof=1):.2f}" in row
    assert "tiny (mean ± std, 2 runs)" in r.stdout


# ---------------------------------------------------------------------------- the file check itself
def test_file_probe_reads_sizes_from_headers_and_names_every_problem(tmp_path):
    from synaug.data.files import probe

    rgb = Image.fromarray(np.random.RandomState(0).randint(0, 256, (40, 50, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010E] = "x" * 20000  # the size comes after a large EXIF block
    rgb.save(tmp_path / "exif.jpg", exif=exif.tobytes())
    rgb.save(tmp_path / "a.png")
    rgb.save(tmp_path / "a.webp")
    assert [probe(tmp_path / f) for f in ("exif.jpg", "a.png", "a.webp")] == [((50, 40), None)] * 3
    raw = (tmp_path / "exif.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) - 200])
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:300])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    found = {f: probe(tmp_path / f) for f in ("cut.jpg", "cut.png", "empty.png", "notes.png", "none.png")}
    assert all(size is None for size, _ in found.values())
    assert found["cut.jpg"][1].startswith("cannot decode") and found["cut.png"][1].startswith("cannot decode")
    assert found["empty.png"][1] == "empty file" and found["none.png"][1] == "file not found"
    assert "UnidentifiedImageError" in found["notes.png"][1]
    assert probe(tmp_path)[1] == "a folder, not an image file"


def test_table3_keeps_the_paper_reading_for_old_and_new_metrics():
    """The Table 3 reproduction reads the paper's reading from the gaps, whatever reading a
    run's metrics.json led with (runs cached before the fairlearn headline lead with 'paper')."""
    from synaug.experiments import table3
    from synaug.train.evaluate import fairness_block

    rng = np.random.RandomState(0)
    y, g = rng.randint(0, 2, 400), rng.randint(0, 4, 400)
    p = np.where(rng.rand(400) < 0.8, y, 1 - y)
    f = fairness_block(y, p, g, ["male", "female"], ["W", "B", "A", "I"],
                       train_cell_counts=[[30, 5, 10, 8], [10, 12, 3, 9]])
    new = {"final": "trained", "results": {"trained": {"fairness": f, "top1": 0.8}}}
    old = {"final": "trained", "results": {"trained": {"fairness": {**f, "headline": f["paper_reading"]}}}}
    want = {k: f["paper_reading"][k] for k in ("DP", "EO", "ED")}
    assert table3._headline(new) == table3._headline(old) == want
    assert want["DP"] == f["demographic_parity_population"] != f["headline"]["DP"]
