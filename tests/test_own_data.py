"""A user's own data, end to end through the CLI (issue 13): every row of the issue's table.

Each test runs ``synaug`` as a user would: as a subprocess for the headline paths (a piped
stdout, a different working directory), through ``synaug.cli.main`` in-process where a test
needs to look inside (figures) or to fake an OS condition (a read-only folder).

Data: a tiny ImageFolder with the CIFAR-10 class names (long names, ten classes: the
per-class chart must keep them apart), 16x16 RGB PNGs, plus a pool folder of extra images.
"""
from __future__ import annotations

import errno
import json
import os
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

SYNAUG = Path(sys.executable).parent / "synaug"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_COUNTS = [6, 5, 4, 3, 3, 2, 2, 2, 1, 1]
TEST_PER_CLASS = 2
TRAIN = {"epochs": 1, "batch_size": 16, "model": {"name": "resnet32", "width": 4}, "progress": False,
         "schedule": {"warmup_epochs": 0, "milestones": [], "factors": []}}


def synaug(*args, cwd=None):
    """``synaug ARGS`` as a subprocess (stdout/stderr piped, as when output goes to a file)."""
    return subprocess.run([str(SYNAUG), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def cli(*args, cwd=None):
    """``synaug ARGS`` in-process through ``synaug.cli.main`` (same code as the entry point,
    without the 2-3 s of a fresh interpreter); returns what :func:`synaug` returns."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            contextlib.chdir(cwd or os.getcwd()):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse usage errors
            rc = e.code
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def one_line(stderr: str) -> str:
    lines = [x for x in stderr.strip().splitlines() if not x.startswith("synaug: warning:")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("synaug: error: "), stderr
    return lines[0]


def _img(path: Path, seed: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8), "RGB").save(path)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Workspace: ``photos/{train,test}/<class>/``, ``flat/<class>/``, ``pool/<class>/``,
    ``photos.csv`` (class names only, paths relative to photos/)."""
    base = tmp_path_factory.mktemp("own")
    seed = 0
    rows = []
    for c, name in enumerate(CLASSES):
        for split, n in (("train", TRAIN_COUNTS[c]), ("test", TEST_PER_CLASS)):
            for i in range(n):
                seed += 1
                rel = f"{split}/{name}/{i}.png"
                _img(base / "photos" / rel, seed)
                _img(base / "flat" / name / f"{split}{i}.png", seed)
                rows.append({"path": rel, "class_name": name, "split": split})
        for i in range(8):
            seed += 1
            _img(base / "pool" / name / f"p{i}.png", seed)
    pd.DataFrame(rows).to_csv(base / "photos.csv", index=False)
    return base


def write_cfg(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def base_cfg(**kw) -> dict:
    cfg = {"name": "own", "data": {"manifest": "../photos.csv", "root": "../photos"},
           "plan": {"mode": "class"}, "train": dict(TRAIN)}
    cfg.update(kw)
    return cfg


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# ---------------------------------------------------------------------------- own data through `synaug run`
@pytest.fixture(scope="module")
def csv_run(ws):
    """`data: {manifest: photos.csv}` (class names alone, relative paths resolved against the
    config's folder, run from another working directory) + pooled images from a folder."""
    cfg = write_cfg(ws / "cfgs" / "csv.yaml", base_cfg(
        name="my-own-photos-with-a-long-run-name",
        generate={"backend": "pool", "resolution": 16, "pool": {"manifest": "../pool"}},
        finetune={"epochs": 2, "progress": False}))
    r = synaug("run", cfg, "--out", ws / "runs" / "csv", cwd="/")
    assert r.returncode == 0, r.stderr[-3000:]
    return ws / "runs" / "csv", r


def test_run_on_a_csv_manifest_with_class_names_and_a_pool_folder(csv_run, ws):
    run, r = csv_run
    s = metrics(run)
    assert s["real_train_counts"] == TRAIN_COUNTS            # class order: sorted names = CIFAR order
    assert s["train_counts_after"] == [max(TRAIN_COUNTS)] * 10
    assert s["synthetic"] == 10 * 6 - sum(TRAIN_COUNTS)
    assert s["generator"] == "pool:pool"
    train = Manifest.read(run / "data" / "train.parquet")   # real-only manifest joined with the pool's images
    assert set(train.df["source"]) == {"real", "synthetic"} and set(train.df["split"]) == {"train"}
    assert train.roots["real"].resolve() == (ws / "photos").resolve()
    real = Manifest.read(run / "data" / "real.parquet")
    assert real.classes == CLASSES and (real.df["split"] == "test").sum() == 10 * TEST_PER_CLASS
    assert set(s["results"]) == {"trained", "finetuned"}
    assert (run / "report.html").is_file()


def test_summary_table_is_whole_when_piped(csv_run):
    _, r = csv_run
    assert "my-own-photos-with-a-long-run-name" in r.stdout and "pool:pool" in r.stdout
    assert "…" not in r.stdout
    for stage, res in metrics(csv_run[0])["results"].items():
        assert f"{100 * res['top1']:.2f}" in r.stdout


def test_relative_data_root_is_resolved_against_the_config_folder(ws, tmp_path):
    # the same relative root from the command line (--set) is the working directory's
    r = cli("run", ws / "cfgs" / "csv.yaml", "--out", tmp_path / "o", "--set", "data.root=photos",
               "--set", "generate=null", "--set", "finetune=null", cwd=ws)
    assert r.returncode == 0, r.stderr[-2000:]
    assert Manifest.read(tmp_path / "o" / "data" / "real.parquet").roots["real"].resolve() == (ws / "photos").resolve()
    r = cli("run", ws / "cfgs" / "csv.yaml", "--out", tmp_path / "o2", "--set", "data.root=photos", cwd="/")
    assert r.returncode == 2 and "data.root: folder not found: photos" in one_line(r.stderr)
    assert not (tmp_path / "o2").exists()


def test_run_on_a_flat_image_folder_needs_and_takes_a_test_fraction(ws, tmp_path):
    cfg = {"name": "flat", "data": {"dataset": "imagefolder", "root": str(ws / "flat")}, "plan": None,
           "train": {**TRAIN, "algorithm": {"name": "ldam_drw"}}}
    p = write_cfg(tmp_path / "flat.yaml", cfg)
    r = cli("run", p, "--out", tmp_path / "no-test")
    assert r.returncode == 2
    assert "no test rows" in one_line(r.stderr) and "data.test_fraction" in r.stderr
    assert not (tmp_path / "no-test").exists()          # refused before anything was written
    r = cli("run", p, "--out", tmp_path / "ok", "--set", "data.test_fraction=0.3")
    assert r.returncode == 0, r.stderr[-2000:]
    real = Manifest.read(tmp_path / "ok" / "data" / "real.parquet")
    n = (TRAIN_COUNTS + np.full(10, TEST_PER_CLASS))
    assert real.class_counts("test").tolist() == np.minimum(np.rint(0.3 * n), n - 1).astype(int).tolist()
    assert (real.class_counts("train") >= 1).all()
    # ldam_drw with fewer epochs than its DRW start: a warning, and the run still runs
    assert "synaug: warning: ldam_drw: epochs is 1 but deferred re-weighting starts at epoch 160" in r.stderr


def test_run_on_an_image_folder_with_split_folders(ws, tmp_path):
    p = write_cfg(tmp_path / "f.yaml", {"name": "folder", "data": {"dataset": "imagefolder", "root": "photos"},
                                        "plan": None, "train": TRAIN})
    # relative data.root next to the config file
    (tmp_path / "photos").symlink_to(ws / "photos", target_is_directory=True)
    r = cli("run", p, "--out", tmp_path / "o", cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]
    real = Manifest.read(tmp_path / "o" / "data" / "real.parquet")
    assert real.class_counts("train").tolist() == TRAIN_COUNTS
    assert real.class_counts("test").tolist() == [TEST_PER_CLASS] * 10


@pytest.mark.parametrize("pool", ["folder", "csv-without-split", "dataset"])
def test_pool_from_a_folder_a_csv_without_split_or_a_dataset(ws, tmp_path, pool):
    if pool == "folder":
        spec = {"manifest": str(ws / "pool")}
    elif pool == "csv-without-split":
        rows = [{"path": f"{c}/p{i}.png", "class_name": c} for c in CLASSES for i in range(8)]
        pd.DataFrame(rows).to_csv(tmp_path / "pool.csv", index=False)
        spec = {"manifest": str(tmp_path / "pool.csv"), "root": str(ws / "pool")}
    else:
        spec = {"dataset": "imagefolder", "root": str(ws / "pool")}
    cfg = base_cfg(data={"manifest": str(ws / "photos.csv"), "root": str(ws / "photos")},
                   generate={"backend": "pool", "resolution": 16, "pool": spec})
    r = main_run(tmp_path, cfg)
    s = metrics(tmp_path / "o")
    assert s["synthetic"] == 60 - sum(TRAIN_COUNTS) and s["train_counts_after"] == [6] * 10, r
    syn = Manifest.read(tmp_path / "o" / "synthetic" / "synthetic.parquet")
    assert all(p.is_file() for p in syn.abspaths())


def test_dataset_table_with_a_relative_file_plus_pooled_images(ws, tmp_path):
    """`dataset: table` with `options: {file: ...}` relative to the config: the issue's second
    row (a real-only table joined with generated rows died on 'different synthetic roots')."""
    (ws / "photos" / "table.csv").write_text((ws / "photos.csv").read_text())  # paths relative to the table
    cfg = base_cfg(data={"dataset": "table", "options": {"file": "../photos/table.csv"}},
                   generate={"backend": "pool", "resolution": 16, "pool": {"manifest": "../pool"}})
    p = write_cfg(ws / "cfgs" / "table.yaml", cfg)
    r = cli("run", p, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    train = Manifest.read(tmp_path / "o" / "data" / "train.parquet")
    assert (train.df["source"] == "synthetic").sum() == 60 - sum(TRAIN_COUNTS)
    assert all(p.is_file() for p in train.abspaths())


def main_run(tmp_path, cfg: dict, *extra, out="o", code=0):
    """``synaug run`` through ``synaug.cli.main`` (in-process); returns (stdout, stderr)."""
    import contextlib
    import io

    p = write_cfg(tmp_path / f"{out}.yaml", cfg)
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = main(["run", str(p), "--out", str(tmp_path / out), *map(str, extra)])
    assert rc == code, e.getvalue()[-3000:]
    return o.getvalue(), e.getvalue()


def test_run_on_a_csv_with_groups(ws, tmp_path):
    """class x group data (a fairness task) from a hand-written CSV: group names alone."""
    df = pd.read_csv(ws / "photos.csv")
    df["group_name"] = ["indoor" if i % 2 else "outdoor" for i in range(len(df))]
    df.to_csv(tmp_path / "groups.csv", index=False)
    pool = pd.DataFrame([{"path": f"{c}/p{i}.png", "class_name": c, "group_name": "indoor" if i % 2 else "outdoor"}
                         for c in CLASSES for i in range(8)])
    pool.to_csv(tmp_path / "pool.csv", index=False)
    cfg = base_cfg(data={"manifest": str(tmp_path / "groups.csv"), "root": str(ws / "photos")},
                   plan={"mode": "cell"},
                   generate={"backend": "pool", "resolution": 16,
                             "pool": {"manifest": str(tmp_path / "pool.csv"), "root": str(ws / "pool")}})
    main_run(tmp_path, cfg)
    real = Manifest.read(tmp_path / "o" / "data" / "real.parquet")
    assert real.groups == ["indoor", "outdoor"]
    train = Manifest.read(tmp_path / "o" / "data" / "train.parquet")
    cells = train.cell_counts("train")
    assert (cells == cells.max(axis=0, keepdims=True)).all()  # every class reaches each group's largest cell
    res = metrics(tmp_path / "o")["results"]["trained"]
    assert "indoor" in json.dumps(res["group_accuracy"]) and "outdoor" in json.dumps(res["group_accuracy"])
    assert (tmp_path / "o" / "plots" / "cells_after.png").is_file()


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from synaug.generate.tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd", seed=0, sample_size=16)


def test_run_on_an_image_folder_with_generated_images(ws, tiny_sd, tmp_path):
    cfg = {"name": "gen", "data": {"dataset": "imagefolder", "root": str(ws / "photos")},
           "plan": {"mode": "class", "target": 3},
           "generate": {"backend": "txt2img", "model": str(tiny_sd), "steps": 2, "resolution": 16,
                        "modifiers": "none", "batch_size": 8},
           "train": TRAIN}
    main_run(tmp_path, cfg)
    s = metrics(tmp_path / "o")
    assert s["synthetic"] == sum(max(3 - n, 0) for n in TRAIN_COUNTS)
    assert "txt2img" in s["generator"] and "tiny-sd" in s["generator"]
    assert s["train_counts_after"] == [max(n, 3) for n in TRAIN_COUNTS]


# ---------------------------------------------------------------------------- step by step: real + synthetic in one manifest
@pytest.fixture(scope="module")
def steps(ws, tmp_path_factory):
    """A plan from photos.csv and the pool's synthetic.parquet (`synaug generate`)."""
    d = tmp_path_factory.mktemp("steps")
    r = cli("plan", "--manifest", ws / "photos.csv", "--data-root", ws / "photos", "--out", d / "plan.json")
    assert r.returncode == 0, r.stderr
    write_cfg(d / "gen.yaml", {"backend": "pool", "resolution": 16, "pool": {"manifest": str(ws / "pool")}})
    r = cli("generate", "--plan", d / "plan.json", "--config", d / "gen.yaml", "--out", d / "synthetic",
               "--no-progress")
    assert r.returncode == 0, r.stderr
    write_cfg(d / "train.yaml", TRAIN)
    (d / "ft.yaml").write_text("epochs: 2\nprogress: false\n")
    return d


def test_train_on_repeated_train_manifests_and_on_a_merged_manifest(ws, steps, tmp_path):
    syn = steps / "synthetic" / "synthetic.parquet"
    n_syn = len(Manifest.read(syn))
    # absolute paths in a hand-written CSV are accepted (relative to their common folder)
    df = pd.read_csv(ws / "photos.csv")
    df["path"] = [str(ws / "photos" / p) for p in df["path"]]
    df.to_csv(tmp_path / "absolute.csv", index=False)
    r = cli("train", "-c", steps / "train.yaml", "--train-manifest", tmp_path / "absolute.csv",
               "--train-manifest", syn, "--out", tmp_path / "twice")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "twice" / "summary.json").read_text())
    assert s["train_sources"] == {"real": sum(TRAIN_COUNTS), "synthetic": n_syn}  # both files, not the last only
    assert "its 20 test rows are not read" in r.stderr
    # the same rows through `synaug manifest merge`
    r = cli("manifest", "merge", ws / "photos.csv", syn, "--data-root", ws / "photos", "--out", tmp_path / "M.parquet")
    assert r.returncode == 0, r.stderr
    m = Manifest.read(tmp_path / "M.parquet")
    assert m.classes == CLASSES and len(m) == sum(TRAIN_COUNTS) + 20 + n_syn
    assert all(p.is_file() for p in m.abspaths())
    r = cli("train", "-c", steps / "train.yaml", "--train-manifest", tmp_path / "M.parquet", "--out", tmp_path / "merged")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "merged" / "summary.json").read_text())["train_sources"] == s["train_sources"]


def test_merge_matches_classes_by_name_and_rebases_roots(ws, tmp_path):
    a = pd.read_csv(ws / "photos.csv")
    a[a["class_name"].isin(["cat", "dog"])].to_csv(tmp_path / "a.csv", index=False)
    # another manifest, another folder, another class order: dog=0, cat=1, deer=2
    b_classes = ["dog", "cat", "deer"]
    rows = [{"path": f"{c}/p{i}.png", "label": lab, "split": "train"} for lab, c in enumerate(b_classes) for i in range(2)]
    Manifest.from_records(rows, b_classes, {"real": ws / "pool"}).write(tmp_path / "b.parquet")
    r = cli("manifest", "merge", tmp_path / "a.csv", tmp_path / "b.parquet", "--data-root", ws / "photos",
               "--out", tmp_path / "m.parquet")
    assert r.returncode == 0, r.stderr
    m = Manifest.read(tmp_path / "m.parquet")
    assert m.classes == ["cat", "dog", "deer"]
    assert m.class_counts(None).tolist() == [3 + TEST_PER_CLASS + 2, 2 + TEST_PER_CLASS + 2, 2]
    assert m.roots["real"].resolve() == ws.resolve()  # photos/ and pool/ rebased onto their common folder
    for p, name in zip(m.abspaths(), m.df["class_name"]):
        assert p.is_file() and f"/{name}/" in str(p)  # every row still names its own image and class


def test_readme_train_finetune_evaluate_example_runs_as_written(ws, steps, tmp_path):
    """The README's `synaug train/finetune/evaluate … M.parquet` lines, verbatim, on a manifest
    that holds train, synthetic and test rows."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("### Train, fine-tune, evaluate", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [x.strip() for x in block.strip().splitlines() if x.strip().startswith("synaug ")]
    assert len(lines) == 3
    syn = steps / "synthetic" / "synthetic.parquet"
    assert cli("manifest", "merge", ws / "photos.csv", syn, "--data-root", ws / "photos",
                  "--out", tmp_path / "M.parquet").returncode == 0
    for f in ("train.yaml", "ft.yaml"):
        (tmp_path / f).write_text((steps / f).read_text())
    for line in lines:
        r = cli(*line.split()[1:], cwd=tmp_path)
        assert r.returncode == 0, (line, r.stderr[-2000:])
    ev = json.loads((tmp_path / "runs" / "eval" / "metrics.json").read_text())
    assert ev["num_samples"] == 10 * TEST_PER_CLASS
    sub = Manifest.read(tmp_path / "runs" / "ft" / "finetune_subset.parquet")
    assert set(sub.df["split"]) == {"train"} and set(sub.df["source"]) == {"real"}


# ---------------------------------------------------------------------------- reports keyed by run folder
@pytest.fixture(scope="module")
def sweep(ws, tmp_path_factory):
    """Two runs of ONE config (same name) from a --set sweep, and a run with other classes."""
    d = tmp_path_factory.mktemp("sweep")
    cfg = write_cfg(d / "cfg" / "sweep.yaml", base_cfg(plan=None, data={"manifest": str(ws / "photos.csv"),
                                                                        "root": str(ws / "photos")}))
    for seed in (0, 1):
        r = cli("run", cfg, "--out", d / f"seed{seed}" / "out", "--set", f"train.seed={seed}")
        assert r.returncode == 0, r.stderr[-2000:]
    df = pd.read_csv(ws / "photos.csv")
    df = df[df["class_name"].isin(["dog", "frog", "truck"])]
    df.to_csv(d / "three.csv", index=False)
    r = cli("run", cfg, "--out", d / "three", "--set", f"data.manifest={d / 'three.csv'}")
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def _figures(monkeypatch):
    """Capture the matplotlib figures the report writes (by file name)."""
    from synaug.report import plots

    figs = {}
    real_save = plots._save

    def keep(fig, path):
        figs[Path(path).name] = fig
        fig.canvas.draw()
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: None)
    return figs


def test_report_keys_runs_of_one_config_by_folder(sweep, tmp_path, monkeypatch, capsys):
    figs = _figures(monkeypatch)
    a, b = sweep / "seed0" / "out", sweep / "seed1" / "out"
    assert metrics(a)["name"] == metrics(b)["name"]
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| seed0/out | trained |" in md and "| seed1/out | trained |" in md
    # the per-class chart draws one bar series per run (none silently dropped)
    ax = figs["per_class_compare.png"].axes[0]
    assert len(ax.containers) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["seed0/out", "seed1/out"]
    # labels you set
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "cmp2"), "--label", "lr 0.1",
                 "--label", "lr 0.01"]) == 0
    md = (tmp_path / "cmp2" / "comparison.md").read_text()
    assert "| lr 0.1 | trained |" in md and "| lr 0.01 | finetuned |" not in md and "| lr 0.01 | trained |" in md
    capsys.readouterr()
    assert main(["report", str(a), str(b), "--label", "x", "--out", str(tmp_path / "c3")]) == 2
    assert "1 --label for 2 runs" in capsys.readouterr().err
    assert main(["report", str(a), str(a), "--out", str(tmp_path / "c4")]) == 2
    assert "given twice" in capsys.readouterr().err


def test_report_compares_runs_with_different_classes_by_name(sweep, tmp_path, monkeypatch):
    figs = _figures(monkeypatch)
    a, c = sweep / "seed0" / "out", sweep / "three"
    assert main(["report", str(a), str(c), "--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    table = md.split("## Per-class test accuracy", 1)[1]
    rows = {line.split("|")[1].strip(): [x.strip() for x in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and not line.startswith("| class")}
    pa = metrics(a)["results"]["trained"]["per_class"]
    pc = metrics(c)["results"]["trained"]["per_class"]
    assert list(pc) == ["dog", "frog", "truck"]
    for name in CLASSES:
        assert rows[name][0] == f"{100 * pa[name]:.2f}"
        assert rows[name][1] == (f"{100 * pc[name]:.2f}" if name in pc else "-")
    # the chart: run 'three' has bars exactly at its own classes' ticks
    ax = figs["per_class_compare.png"].axes[0]
    ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    heights = {ticks[round(bar.get_x() + bar.get_width() / 2 - 0.2)]: bar.get_height()
               for bar in ax.containers[1] if np.isfinite(bar.get_height())}
    assert heights == pytest.approx({k: 100 * v for k, v in pc.items()})


def test_report_plots_mark_real_vs_synthetic_and_keep_class_names_apart(csv_run, sweep, tmp_path, monkeypatch):
    figs = _figures(monkeypatch)
    assert main(["report", str(csv_run[0])]) == 0
    ax = figs["samples.png"].axes[0]
    div = [line for line in ax.lines if line.get_gid() == "real-synthetic-divider"]
    assert len(div) == 1
    x = div[0].get_xdata()[0]
    img = np.asarray(ax.images[0].get_array())
    col = int(round(x))
    assert (img[:, col - 2:col + 3] == 255).all()                 # the line runs in the gap between the halves
    left, right = img[:, :col - 6], img[:, col + 6:]
    assert (left != 255).any(axis=2).sum() > 0 and (right != 255).any(axis=2).sum() > 0
    ticks = {t.get_text(): t.get_position()[0] for t in ax.get_xticklabels()}
    assert ticks["real"] < x < ticks["synthetic"]
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    # ten CIFAR-10 class names under two runs' bars: no two labels overlap
    assert main(["report", str(sweep / "seed0" / "out"), str(sweep / "seed1" / "out"), "--out", str(tmp_path / "c")]) == 0
    fig = figs["per_class_compare.png"]
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in fig.axes[0].get_xticklabels()]
    assert len(boxes) == 10
    assert not any(p.overlaps(q) for i, p in enumerate(boxes) for q in boxes[i + 1:])


# ---------------------------------------------------------------------------- extending a finished run
def test_extending_a_finished_run(ws, tmp_path):
    cfg = base_cfg(plan=None, data={"manifest": str(ws / "photos.csv"), "root": str(ws / "photos")},
                   finetune={"epochs": 1, "progress": False})
    out, err = main_run(tmp_path, cfg)
    first = json.loads((tmp_path / "o" / "train" / "history.json").read_text())
    # more epochs of a constant schedule: continue after the epoch done, re-do what follows
    out, err = main_run(tmp_path, cfg, "--set", "train.epochs=2")
    assert "[train] running (extending the training: epochs 1 -> 2: the 1 epochs done are kept" in out
    assert "continuing at epoch 2 of 2" in out
    assert "[eval-train] running" in out and "[finetune] running" in out
    hist = json.loads((tmp_path / "o" / "train" / "history.json").read_text())
    assert len(hist) == 2 and hist[0]["loss"] == first[0]["loss"]   # epoch 1 kept, not re-trained
    # a changed fine-tune re-does only the fine-tuning, on the trained model
    out, err = main_run(tmp_path, cfg, "--set", "train.epochs=2", "--set", "finetune.epochs=2")
    assert "[train] up to date, skipped" in out and "the trained model is reused" in out
    # a schedule whose past learning rates change with epochs: trained again, and said so
    out, err = main_run(tmp_path, cfg, "--set", "train.epochs=3", "--set", "train.schedule.name=cosine",
                        "--set", "train.schedule.warmup_epochs=0")
    assert "[train] running (training again from scratch: the config differs in epochs, schedule)" in out
    assert len(json.loads((tmp_path / "o" / "train" / "history.json").read_text())) == 3
    # no message of `synaug run` names a flag `run` does not have
    assert "--no-resume" not in out + err


def test_train_cli_extends_and_its_hint_names_its_own_flag(steps, tmp_path):
    syn = steps / "synthetic" / "synthetic.parquet"
    args = ["train", "-c", steps / "train.yaml", "--train-manifest", syn, "--out", tmp_path / "t"]
    assert cli(*args).returncode == 0
    r = cli(*args, "--set", "epochs=2")
    assert r.returncode == 0 and "extending the run" in r.stderr
    assert len(json.loads((tmp_path / "t" / "history.json").read_text())) == 2
    r = cli(*args, "--set", "epochs=2", "--set", "optim.lr=0.01")
    assert r.returncode == 2 and "--no-resume" in one_line(r.stderr)
    assert "--no-resume" in cli("train", "--help").stdout
    assert "--no-resume" not in cli("run", "--help").stdout


# ---------------------------------------------------------------------------- whole config checked first
def _pool_gen(ws):
    return {"backend": "pool", "resolution": 16, "pool": {"manifest": str(ws / "pool")}}


BAD_CONFIGS = {
    "plan-mode-misspelled": (lambda ws: {"plan": {"mode": "clas"}}, "plan.mode"),
    "unknown-model-name": (lambda ws: {"train": {**TRAIN, "model": {"name": "resnet999"}}}, "unknown model 'resnet999'"),
    "unknown-key": (lambda ws: {"finetune": {"epochz": 3}}, "unknown key 'finetune.epochz'"),
    "bad-value": (lambda ws: {"train": {**TRAIN, "epochs": 0}}, "train.epochs"),
    "nan": (lambda ws: {"data": {"dataset": "imagefolder", "root": str(ws / "photos"), "imbalance_factor": float("nan")}},
            "finite number"),
    "missing-data-root": (lambda ws: {"data": {"dataset": "imagefolder", "root": str(ws / "nope")}},
                          "data.root: folder not found"),
    "missing-manifest": (lambda ws: {"data": {"manifest": str(ws / "nope.csv")}}, "data.manifest: manifest file"),
    "missing-pool-folder": (lambda ws: {"generate": {**_pool_gen(ws), "pool": {"manifest": str(ws / "nope")}}},
                            "generate.pool.manifest"),
    "txt2img-without-model": (lambda ws: {"generate": {"backend": "txt2img"}}, "generate.model"),
    "pool-too-small": (lambda ws: {"plan": {"mode": "class", "target": 20}, "generate": _pool_gen(ws)},
                       "cannot fill class 'airplane'"),
    "size-mismatch": (lambda ws: {"generate": {**_pool_gen(ws), "resolution": 32}}, "generated images will be 32x32"),
    "balance-by-cell-without-groups": (lambda ws: {"finetune": {"balance_by": "cell"}}, "needs data with a group"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_config_is_checked_whole_before_any_stage(ws, tmp_path, case):
    make, expected = BAD_CONFIGS[case]
    cfg = base_cfg(data={"manifest": str(ws / "photos.csv"), "root": str(ws / "photos")})
    cfg.update(make(ws))
    out, err = main_run(tmp_path, cfg, code=2)
    assert expected in one_line(err)
    assert "running" not in out                         # no stage ran
    assert not (tmp_path / "o").exists()                # and nothing was written


def test_a_class_without_real_training_images_is_refused_before_training(ws, tmp_path):
    df = pd.read_csv(ws / "photos.csv")
    df = df[~((df["class_name"] == "truck") & (df["split"] == "train"))]
    df.to_csv(tmp_path / "no-truck.csv", index=False)
    cfg = base_cfg(data={"manifest": str(tmp_path / "no-truck.csv"), "root": str(ws / "photos")},
                   generate=_pool_gen(ws), finetune={"epochs": 1})
    out, err = main_run(tmp_path, cfg, code=2)
    assert "class 'truck' has no real training image" in one_line(err) and "finetune" in err
    assert "running" not in out and not (tmp_path / "o").exists()
    # without fine-tuning the class is filled with pooled images and the run goes through
    cfg["finetune"] = None
    main_run(tmp_path, cfg)
    assert metrics(tmp_path / "o")["train_counts_after"][CLASSES.index("truck")] == 6


def test_non_finite_numbers_are_refused(ws, tmp_path):
    for value in ("nan", "inf"):
        r = cli("inspect", "--dataset", "imagefolder", "--data-root", ws / "photos", "--imbalance-factor", value)
        assert r.returncode == 2 and "must be a finite number" in one_line(r.stderr)
    r = cli("plan", "--manifest", ws / "photos.csv", "--mode", "replace-ratio", "--ratio", "nan",
               "--out", tmp_path / "p.json")
    assert r.returncode == 2 and "must be a finite number" in one_line(r.stderr)
    cfg = write_cfg(tmp_path / "c.yaml", base_cfg(data={"manifest": str(ws / "photos.csv"), "root": str(ws / "photos")}))
    for value in (".inf", ".nan", "inf"):
        r = cli("run", cfg, "--out", tmp_path / "o", "--set", f"data.imbalance_factor={value}")
        assert r.returncode == 2 and "finite number" in one_line(r.stderr)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- one-line errors
def _deny(monkeypatch, folder: Path, err: int):
    """Make ``folder`` behave read-only (``err``: EROFS / EACCES) for this process: creating
    files or folders under it fails as the OS would say (tests may run as root, which ignores
    permission bits, so the OS condition is simulated at the system-call boundary)."""
    folder = str(Path(folder).resolve())
    real_open, real_mkdir = os.open, os.mkdir

    def under(p) -> bool:
        p = os.path.abspath(os.fsdecode(p))
        return p == folder or p.startswith(folder + os.sep)

    def fake_open(path, flags, *a, **k):
        if under(path) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(err, os.strerror(err), os.fsdecode(path))
        return real_open(path, flags, *a, **k)

    def fake_mkdir(path, *a, **k):
        if under(path):
            raise OSError(err, os.strerror(err), os.fsdecode(path))
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@pytest.mark.parametrize("err", [errno.EROFS, errno.EACCES])
def test_read_only_output_folders_are_one_line_errors(ws, steps, csv_run, tmp_path, monkeypatch, capsys, err):
    ro = tmp_path / "ro"
    ro.mkdir()
    _deny(monkeypatch, ro, err)
    cfg = write_cfg(tmp_path / "c.yaml", base_cfg(data={"manifest": str(ws / "photos.csv"), "root": str(ws / "photos")}))
    syn = str(steps / "synthetic" / "synthetic.parquet")
    commands = [
        ["run", str(cfg), "--out", str(ro / "run")],
        ["run", str(cfg), "--out", str(ro)],
        ["train", "-c", str(steps / "train.yaml"), "--train-manifest", syn, "--out", str(ro / "train")],
        ["manifest", "merge", syn, "--out", str(ro / "m.parquet")],
        ["report", str(ws / "runs" / "csv"), str(ws / "runs" / "csv"), "--out", str(ro)],
        ["inspect", "--manifest", syn, "--out", str(ro / "inspect")],
    ]
    for argv in commands:
        capsys.readouterr()
        assert main(argv) == 2, argv
        line = one_line(capsys.readouterr().err)
        assert os.strerror(err) in line or "given twice" in line, (argv, line)
    assert list(ro.iterdir()) == []


def test_unreadable_and_missing_paths_are_one_line_errors(ws, steps, tmp_path, monkeypatch, capsys):
    secret = tmp_path / "secret.csv"
    secret.write_text((ws / "photos.csv").read_text())
    real_open = open

    def deny(file, *a, **k):
        if os.fspath(file) == str(secret):
            raise PermissionError(errno.EACCES, "Permission denied", str(secret))
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    cases = [
        (["plan", "--manifest", str(secret), "--out", str(tmp_path / "p.json")], "Permission denied"),
        (["train", "--train-manifest", str(secret), "--data-root", str(ws / "photos"), "--out", str(tmp_path / "t")],
         "Permission denied"),
        (["inspect", "--dataset", "imagefolder", "--data-root", str(tmp_path / "no-such-folder")], "not found"),
        (["inspect", "--dataset", "shared-cifar10", "--data-root", str(tmp_path / "no-such-folder")],
         "--data-root not found"),
        (["train", "--train-manifest", str(ws / "photos.csv"), "--data-root", str(tmp_path / "no-such-folder"),
          "--out", str(tmp_path / "t")], "--data-root not found"),
        (["train", "--train-manifest", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "t")], "not found"),
    ]
    for argv, expected in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert expected in one_line(capsys.readouterr().err), argv
    assert not (tmp_path / "t").exists() and not (tmp_path / "p.json").exists()


def test_img2img_without_data_root_is_a_one_line_error(ws, tiny_sd, tmp_path):
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    (sub / "photos.csv").write_text((ws / "photos.csv").read_text())   # paths are relative to photos/, not here
    assert cli("plan", "--manifest", ws / "photos.csv", "--target", "2", "--out", tmp_path / "plan.json").returncode == 0
    write_cfg(tmp_path / "i2i.yaml", {"backend": "img2img", "model": str(tiny_sd), "steps": 2, "resolution": 16,
                                      "modifiers": "none", "batch_size": 4})
    args = ["generate", "--plan", tmp_path / "plan.json", "--config", tmp_path / "i2i.yaml", "--real-manifest",
            sub / "photos.csv", "--out", tmp_path / "gen", "--no-progress"]
    r = cli(*args)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert "img2img guidance image not found" in line and "--data-root" in line
    assert not (tmp_path / "gen").exists()
    r = cli(*args, "--data-root", ws / "photos")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(Manifest.read(tmp_path / "gen" / "synthetic.parquet")) == sum(max(2 - n, 0) for n in TRAIN_COUNTS)


# ---------------------------------------------------------------------------- two runs, one folder
def test_a_second_run_into_a_busy_folder_is_refused(ws, tmp_path):
    from synaug.run import run_lock

    cfg = write_cfg(tmp_path / "c.yaml", base_cfg(plan=None, data={"manifest": str(ws / "photos.csv"),
                                                                   "root": str(ws / "photos")}))
    out = tmp_path / "o"
    out.mkdir()
    with run_lock(out):  # another synaug run holds the folder
        r = synaug("run", cfg, "--out", out)
        assert r.returncode == 2
        assert f"run folder {out} is in use by another synaug run (pid {os.getpid()})" in one_line(r.stderr)
        assert [p.name for p in out.iterdir()] == [".synaug-run.lock"]
    # two at once for real: one runs, the other is refused (or, if it started after the first
    # finished, finds everything up to date); never a traceback
    procs = [subprocess.Popen([str(SYNAUG), "run", str(cfg), "--out", str(tmp_path / "both")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _, _ in results)[0] == 0
    for rc, so, se in results:
        assert "Traceback" not in se
        if rc:
            assert rc == 2 and "in use by another synaug run" in one_line(se)
        else:
            assert "report:" in so


def test_per_class_chart_turns_crowded_class_names_upright(tmp_path, monkeypatch):
    """Thirty long names cannot sit side by side: they are turned upright, still apart."""
    from synaug.report import plots

    figs = _figures(monkeypatch)
    names = [f"a-rather-long-class-name-{i}" for i in range(30)]
    acc = {k: np.linspace(0, 1, 30) for k in ("a", "b")}
    plots.per_class_accuracy(names, np.arange(30)[::-1] * 10, acc, tmp_path / "p.png")
    fig = figs["p.png"]
    labels = fig.axes[0].get_xticklabels()
    assert {t.get_rotation() for t in labels} == {90.0}
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in labels]
    assert not any(p.overlaps(q) for i, p in enumerate(boxes) for q in boxes[i + 1:])
