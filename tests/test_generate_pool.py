"""Pool backend, runner bookkeeping (resume, reconciliation, sharding) and the CLI, without torch."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synaug.cli import main
from synaug.errors import SynaugError
from synaug.generate import GenerateConfig, generate
from synaug.generate.pool import PoolGenerator, synthetic_domain_shift
from synaug.generate.tiny import toy_image_manifest
from synaug.manifest import Manifest
from synaug.plan import Cell, Plan

CLASSES = ["cat", "dog", "pickup_truck"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    m = toy_image_manifest(root / "img", CLASSES, 12, ext="jpg", seed=1)
    m.write(root / "pool.parquet")
    return root / "pool.parquet", m


def _plan(counts=(5, 0, 7), seed=0):
    cells = [Cell(i, c, 3, n, attributes={"class": c}) for i, (c, n) in enumerate(zip(CLASSES, counts))]
    return Plan("class", CLASSES, cells, seed=seed)


def _cfg(pool_path, **kw):
    pool = {"manifest": str(pool_path), **kw.pop("pool", {})}
    return GenerateConfig(backend="pool", pool=pool, **kw)


def _digests(out: Path) -> dict:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / "images").rglob("*.png"))}


def test_pool_manifest_counts_and_copies(pool, tmp_path):
    path, src = pool
    m = generate(_plan(), _cfg(path), tmp_path / "out", progress=False)
    assert len(m) == 12 and m.class_counts().tolist() == [5, 0, 7]
    assert set(m.df["source"]) == {"synthetic"} and set(m.df["split"]) == {"train"}
    assert set(m.df["generator"]) == {"pool:pool"} and set(m.df["prompt"]) == {""}
    assert m.df["seed"].nunique() == 12 and (m.df["seed"] >= 0).all()
    assert m.roots["synthetic"] == tmp_path / "out"
    # every row lives under the output root (copied, not linked to the pool)
    for p in m.abspaths():
        assert p.is_file() and not p.is_symlink() and (tmp_path / "out") in p.parents
    m.validate(verify_files=True, expected_size=(32, 32))
    again = Manifest.read(tmp_path / "out" / "synthetic.parquet")
    assert again.df.equals(m.df)
    assert not list((tmp_path / "out" / "manifest").glob("*.parquet"))  # shards merged away
    assert (tmp_path / "out" / "generate.yaml").is_file() and (tmp_path / "out" / "plan.json").is_file()


def test_pool_copies_reach_the_disk_once_per_part_before_their_rows(pool, tmp_path, monkeypatch):
    from synaug.generate import runner

    path, _ = pool
    events = []
    real_write, real_part = runner.write_bytes_atomic, runner._write_part
    monkeypatch.setattr(runner, "write_bytes_atomic",
                        lambda p, data, durable=True: (events.append(("image", durable)), real_write(p, data, durable)))
    monkeypatch.setattr(runner, "flush_to_disk", lambda: events.append(("sync",)))
    monkeypatch.setattr(runner, "_write_part", lambda *a: (events.append(("part",)), real_part(*a)))
    monkeypatch.setattr(PoolGenerator, "write_batch", 5)
    m = generate(_plan(), _cfg(path, batch_size=1), tmp_path / "out", progress=False)
    assert len(m) == 12
    # 12 copies in parts of 5: no fsync per file, one sync before each part's rows
    assert events == ([("image", False)] * 5 + [("sync",), ("part",)]) * 2 + [("image", False)] * 2 + [("sync",), ("part",)]


def _source_match(out: Path, m: Manifest, pool_m: Manifest) -> list[str]:
    """Which pool image each output is (exact pixel match after the same PNG re-encode)."""
    lookup = {}
    for p in pool_m.abspaths():
        with Image.open(p) as im:
            lookup[np.asarray(im.convert("RGB")).tobytes()] = str(p)
    found = []
    for p in m.abspaths():
        with Image.open(p) as im:
            found.append(lookup[np.asarray(im).tobytes()])
    return found


def test_pool_without_replacement_and_deterministic(pool, tmp_path):
    path, src = pool
    plan = _plan((12, 3, 12))  # cat / truck need the whole pool
    m = generate(plan, _cfg(path, batch_size=5), tmp_path / "a", progress=False)
    srcs = _source_match(tmp_path / "a", m, src)
    assert len(set(srcs)) == len(srcs) == 27
    for cls, s in zip(m.df["class_name"], srcs):
        assert f"/{cls}/" in s
    # each row records the pool file it was copied from (relative to the pool's root)
    assert [str(src.roots["real"] / f) for f in m.df["source_file"]] == srcs
    m2 = generate(plan, _cfg(path, batch_size=2), tmp_path / "b", progress=False)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert m.df.equals(m2.df)
    # another seed draws other images
    m3 = generate(plan, _cfg(path, seed=1), tmp_path / "c", progress=False)
    assert _source_match(tmp_path / "c", m3, src)[:3] != srcs[:3]


def test_pool_too_small_writes_nothing(pool, tmp_path):
    path, _ = pool
    with pytest.raises(SynaugError, match="pool 'pool' cannot fill class 'dog': the plan needs 13 images, "
                                          "the pool has 12"):
        generate(_plan((1, 13, 0)), _cfg(path), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_synthetic_domain_shift(pool, tmp_path):
    path, src = pool
    plan = _plan((4, 0, 0))
    plain = generate(plan, _cfg(path), tmp_path / "plain", progress=False)
    shifted = generate(plan, _cfg(path, pool={"shift": "synthetic-domain"}), tmp_path / "shift", progress=False)
    assert set(shifted.df["generator"]) == {"pool:pool+synthetic-domain"}
    for a, b in zip(plain.abspaths(), shifted.abspaths()):
        with Image.open(a) as ia, Image.open(b) as ib:
            expect = np.asarray(synthetic_domain_shift(ia))
            got = np.asarray(ib)
            assert np.array_equal(expect, got)
            x = np.asarray(ia, dtype=float)
            assert not np.array_equal(x, got)
    # the transform: smoother (less high-frequency energy), warmer (more red than blue)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    a, b = np.asarray(img, float), np.asarray(synthetic_domain_shift(img), float)
    assert np.abs(np.diff(b, axis=1)).mean() < 0.7 * np.abs(np.diff(a, axis=1)).mean()
    assert (b[..., 0].mean() - b[..., 2].mean()) > (a[..., 0].mean() - a[..., 2].mean()) + 5


def test_pool_groups(tmp_path):
    m = toy_image_manifest(tmp_path / "img", ["landbird", "waterbird"], 4, groups=["land", "water"])
    m.write(tmp_path / "pool.parquet")
    cells = [Cell(c, n, 0, 2, g, gn, {"class": n, "group": gn})
             for c, n in enumerate(m.classes) for g, gn in enumerate(m.groups)]
    plan = Plan("cell", m.classes, cells, m.groups)
    out = generate(plan, _cfg(tmp_path / "pool.parquet"), tmp_path / "out", progress=False)
    assert out.cell_counts().tolist() == [[2, 2], [2, 2]]
    assert sorted({p.split("/")[1] for p in out.df["path"]}) == ["0_0", "0_1", "1_0", "1_1"]
    srcs = _source_match(tmp_path / "out", out, m)
    for (cls, g), s in zip(zip(out.df["class_name"], out.df["group_name"]), srcs):
        assert f"/{cls}/{g}/" in s


def test_resume_reconciles_every_inconsistency(pool, tmp_path):
    path, _ = pool
    plan, out = _plan(), tmp_path / "out"
    generate(plan, _cfg(path), out, progress=False)
    ref = _digests(out)
    ref_df = Manifest.read(out / "synthetic.parquet").df
    # simulate a crash at every awkward moment at once
    df = ref_df.copy()
    (out / df["path"][0]).unlink()                                   # row, no file
    (out / df["path"][1]).write_bytes(b"\x89PNG\r\n trunc")          # row, corrupt file
    tmp = out / "images" / "2" / ".000003.png.abc123.tmp"            # leftover temp file
    tmp.write_bytes(b"half")
    # file without row: drop the merged manifest, keep only the rows of the first cell in a shard
    keep = df[df["label"] == 0][["path", "seed", "prompt", "generator", "source_file"]]
    (out / "synthetic.parquet").unlink()
    (out / "manifest").mkdir(exist_ok=True)
    keep.to_parquet(out / "manifest" / "rank0-part000000.parquet", index=False)
    (out / "manifest" / ".rank1-part000007.parquet.x1.tmp").write_bytes(b"PAR1")
    (out / ".synthetic.parquet.y2.tmp").write_bytes(b"PAR1")
    m = generate(plan, _cfg(path, batch_size=3), out, progress=False)
    assert _digests(out) == ref
    assert m.df.equals(ref_df)
    assert not tmp.exists() and not list(out.rglob("*.tmp"))
    m.validate(verify_files=True)


def test_independent_ranks_then_merge(pool, tmp_path):
    path, _ = pool
    plan, out = _plan(), tmp_path / "out"
    assert generate(plan, _cfg(path), out, rank=1, world_size=2, progress=False) is None
    made = sorted(str(p.relative_to(out)) for p in (out / "images").rglob("*.png"))
    assert len(made) == 6  # plan positions 1, 3, 5, ... of 12
    assert generate(plan, _cfg(path), out, rank=0, world_size=3, progress=False) is None
    m = generate(plan, _cfg(path), out, progress=False)  # one process: makes the rest, merges
    generate(plan, _cfg(path), tmp_path / "ref", progress=False)
    assert _digests(out) == _digests(tmp_path / "ref") and len(m) == 12


def test_changed_config_is_refused(pool, tmp_path):
    path, _ = pool
    generate(_plan(), _cfg(path), tmp_path / "out", progress=False)
    with pytest.raises(SynaugError, match="different config keys: seed"):
        generate(_plan(), _cfg(path, seed=3), tmp_path / "out", progress=False)
    with pytest.raises(SynaugError, match="with a different plan"):
        generate(_plan((5, 1, 7)), _cfg(path), tmp_path / "out", progress=False)
    generate(_plan(), _cfg(path, batch_size=1), tmp_path / "out", progress=False)  # batch size may change


def test_cli_pool_end_to_end(pool, tmp_path, capsys):
    path, _ = pool
    _plan().write(tmp_path / "plan.json")
    (tmp_path / "gen.yaml").write_text(f"backend: pool\npool:\n  manifest: {path}\n")
    rc = main(["generate", "--plan", str(tmp_path / "plan.json"), "--config", str(tmp_path / "gen.yaml"),
               "--set", "pool.shift=synthetic-domain", "--set", "batch_size=4"])
    assert rc == 0
    out = tmp_path / "synthetic"
    m = Manifest.read(out / "synthetic.parquet", verify_files=True)
    assert len(m) == 12 and set(m.df["generator"]) == {"pool:pool+synthetic-domain"}
    import yaml

    resolved = yaml.safe_load((out / "generate.yaml").read_text())
    assert resolved["pool"]["shift"] == "synthetic-domain" and resolved["batch_size"] == 4
    err = capsys.readouterr().err
    assert "pickup_truck" in err and "planned" in err  # per-cell summary


def test_cli_bad_inputs_exit_2_one_line(pool, tmp_path, capsys):
    path, _ = pool
    (tmp_path / "gen.yaml").write_text(f"backend: pool\npool:\n  manifest: {path}\n")
    d = _plan().to_dict()
    d["cells"][1]["synthetic"] = -4
    (tmp_path / "neg.json").write_text(json.dumps(d))
    d = _plan().to_dict()
    d["cells"][1]["class_name"] = "wolf"
    (tmp_path / "unknown.json").write_text(json.dumps(d))
    _plan().write(tmp_path / "ok.json")
    cases = [(["--plan", str(tmp_path / "neg.json")], "negative synthetic count -4"),
             (["--plan", str(tmp_path / "unknown.json")], "unknown class 'wolf'"),
             (["--plan", str(tmp_path / "ok.json"), "--set", "backend=txt2img", "--set", "model=/nonexistent/sd",
               "--no-modifiers"],
              "model folder not found: /nonexistent/sd"),
             (["--plan", str(tmp_path / "ok.json"), "--set", "stpes=3"], "unknown key 'stpes'")]
    for args, msg in cases:
        out = tmp_path / "o"
        rc = main(["generate", "--config", str(tmp_path / "gen.yaml"), "--out", str(out), *args])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and msg in err and err.startswith("synaug: error:") and "\n" not in err, (args, err)
        assert not out.exists()


def test_cli_help_documents_backends(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for word in ("txt2img", "img2img", "pool", "synthetic-domain", "dpm++", "euler", "--no-modifiers"):
        assert word in text


def test_pool_from_a_dataset_records_generator_and_source_file(tmp_path):
    """``pool: {dataset: shared-sd14}``: the Stable Diffusion 1.4 images of ../shared/data fill the
    cells by class name; every row names SD 1.4 as its generator and the CIFAKE file it came from."""
    from synaug.data import load_dataset

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    cells = [Cell(i, c, 0, 3 if c in ("bird", "truck") else 0, attributes={"class": c}) for i, c in enumerate(classes)]
    plan = Plan("class", classes, cells)
    m = generate(plan, GenerateConfig(backend="pool", pool={"dataset": "shared-sd14"}), tmp_path / "o", progress=False)
    assert m.class_counts().tolist() == [0, 0, 3, 0, 0, 0, 0, 0, 0, 3]
    assert set(m.df["generator"]) == {"Stable Diffusion 1.4 (CIFAKE)"}
    sd = load_dataset("shared-sd14")
    for out, cls, rel in zip(m.abspaths(), m.df["class_name"], m.df["source_file"]):
        assert rel.startswith(f"sd14/{cls}/") and rel in set(sd.df["path"])
        with Image.open(out) as a, Image.open(sd.roots["synthetic"] / rel) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b.convert("RGB")))  # the same 32x32 pixels
    assert m.df["source_file"].nunique() == 6  # without replacement
    # a class the pool cannot fill: one line with the class, the count needed and the count available
    short = Plan("class", classes, [Cell(2, "bird", 0, 5000, attributes={"class": "bird"})])
    with pytest.raises(SynaugError, match=r"pool 'shared-sd14' cannot fill class 'bird': the plan needs 5000 "
                                          r"images, the pool has 4731"):
        generate(short, GenerateConfig(backend="pool", pool={"dataset": "shared-sd14"}), tmp_path / "x",
                 progress=False)
    other = Plan("class", ["cat", "ferret"], [Cell(1, "ferret", 0, 2, attributes={"class": "ferret"})])
    with pytest.raises(SynaugError, match=r"cannot fill class 'ferret': the plan needs 2 images, the pool has 0"):
        generate(other, GenerateConfig(backend="pool", pool={"dataset": "shared-sd14"}), tmp_path / "y",
                 progress=False)
    with pytest.raises(SynaugError, match="exactly one of pool.manifest"):
        generate(plan, GenerateConfig(backend="pool", pool={"dataset": "shared-sd14", "manifest": "x.parquet"}),
                 tmp_path / "z", progress=False)


def test_pool_writes_manifest_parts_of_write_batch_images_not_model_batches(pool, tmp_path, monkeypatch):
    """A pool copy is not a model call: its manifest parts hold PoolGenerator.write_batch images,
    whatever generate.batch_size says (same images and rows either way)."""
    import synaug.generate.runner as runner
    from synaug.generate.pool import PoolGenerator

    path, _ = pool
    sizes = []
    real_write = runner._write_part
    monkeypatch.setattr(runner, "_write_part",
                        lambda o, r, k, rows: (sizes.append(len(rows)), real_write(o, r, k, rows)))
    monkeypatch.setattr(PoolGenerator, "write_batch", 4)
    a = generate(_plan(), _cfg(path, batch_size=2), tmp_path / "a", progress=False)
    assert sizes == [4, 4, 4]                                      # 12 images: 3 parts of 4, not 6 of 2
    sizes.clear()
    monkeypatch.setattr(PoolGenerator, "write_batch", 1)
    b = generate(_plan(), _cfg(path, batch_size=5), tmp_path / "b", progress=False)
    assert sizes == [5, 5, 2]                                      # batch_size larger: it wins
    assert a.df.equals(b.df)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
