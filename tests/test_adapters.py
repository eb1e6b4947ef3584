"""Dataset adapters on small fixtures made here in the real on-disk formats (no downloads)."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synaug.data import cifar as cifar_mod
from synaug.data import list_datasets, load_dataset, long_tail_counts, make_long_tail
from synaug.data.cifar import safe_unpickle
from synaug.data.utkface import parse_utkface_name
from synaug.errors import SynaugError
from synaug.manifest import Manifest


# ---------------------------------------------------------------------------- CIFAR fixtures
def _pickle_like_the_originals(obj) -> bytes:
    """Protocol 2 with numpy 1.x global names, as in the distributed python-format batches."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _pixels(n: int, offset: int) -> np.ndarray:
    """Distinct, recognisable uint8 rows of 3072 values (R plane, G plane, B plane)."""
    rng = np.random.RandomState(offset)
    return rng.randint(0, 256, size=(n, 3072), dtype=np.uint8)


def make_cifar_archive(folder: Path, kind: str = "cifar10", train_per_class: int = 4, test_per_class: int = 2,
                       seed: int = 0, bytes_keys: bool = False, replace: dict | None = None) -> tuple[Path, dict]:
    """Write ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` with the real layout.

    Returns the archive path and the arrays written (``train_x``, ``train_y``, ``test_x``, ...).
    ``replace`` maps a member name to raw bytes to store instead (e.g. a malicious pickle).
    """
    C = 10 if kind == "cifar10" else 100
    rng = np.random.RandomState(seed)
    train_y = rng.permutation(np.repeat(np.arange(C), train_per_class))  # interleaved like the real batches
    test_y = rng.permutation(np.repeat(np.arange(C), test_per_class))
    train_x, test_x = _pixels(len(train_y), seed + 1), _pixels(len(test_y), seed + 2)
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    members: dict[str, bytes] = {}
    if kind == "cifar10":
        top, label_key = "cifar-10-batches-py", "labels"
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        for b, idx in enumerate(np.array_split(np.arange(len(train_y)), 5), 1):
            members[f"data_batch_{b}"] = _pickle_like_the_originals(
                {k("batch_label"): f"training batch {b} of 5", k("labels"): train_y[idx].tolist(),
                 k("data"): train_x[idx], k("filenames"): [f"img_{i}.png" for i in idx]})
        members["test_batch"] = _pickle_like_the_originals(
            {k("batch_label"): "testing batch 1 of 1", k("labels"): test_y.tolist(), k("data"): test_x})
        members["batches.meta"] = _pickle_like_the_originals(
            {k("label_names"): names, k("num_cases_per_batch"): 10000, k("num_vis"): 3072})
        archive = folder / "cifar-10-python.tar.gz"
    else:
        top, label_key = "cifar-100-python", "fine_labels"
        names = [f"fine_{i:02d}" for i in range(C)]
        for split, y, x in (("train", train_y, train_x), ("test", test_y, test_x)):
            members[split] = _pickle_like_the_originals(
                {k("filenames"): [f"{i}.png" for i in range(len(y))], k("batch_label"): split,
                 k("fine_labels"): y.tolist(), k("coarse_labels"): (y // 5).tolist(), k("data"): x})
        members["meta"] = _pickle_like_the_originals(
            {k("fine_label_names"): names, k("coarse_label_names"): [f"coarse_{i}" for i in range(20)]})
        archive = folder / "cifar-100-python.tar.gz"
    members.update(replace or {})
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return archive, {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y,
                     "names": names, "label_key": label_key}


def _as_png_pixels(rows: np.ndarray) -> np.ndarray:
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("kind,bytes_keys", [("cifar10", True), ("cifar100", False)])
def test_cifar_archive_to_manifest_and_pngs(tmp_path, kind, bytes_keys):
    archive, truth = make_cifar_archive(tmp_path / "dl", kind, bytes_keys=bytes_keys)
    C = len(truth["names"])
    m = load_dataset(kind, str(tmp_path / "dl"), cache=tmp_path / "cache")
    assert m.classes == truth["names"]
    assert m.class_counts("train").tolist() == [4] * C
    assert m.class_counts("test").tolist() == [2] * C
    train = m.split("train")
    # archive order is kept: row i is image i of the train pickles
    assert train.df["label"].tolist() == truth["train_y"].tolist()
    assert m.split("test").df["label"].tolist() == truth["test_y"].tolist()
    m.validate(verify_files=True, expected_size=(32, 32))
    from PIL import Image

    for i in (0, 7, len(train) - 1):
        p = train.abspaths()[i]
        assert p.parent.name == truth["names"][truth["train_y"][i]]
        with Image.open(p) as im:
            np.testing.assert_array_equal(np.asarray(im), _as_png_pixels(truth["train_x"])[i])
    # everything lives in the cache folder, nothing beside the archive
    assert sorted(os.listdir(tmp_path / "dl")) == [archive.name]
    assert all(str(p).startswith(str(tmp_path / "cache")) for p in m.abspaths())


def test_cifar_cache_is_reused_and_extracted_folders_work(tmp_path, monkeypatch):
    archive, truth = make_cifar_archive(tmp_path / "dl", "cifar10")
    first = load_dataset("cifar10", str(archive), cache=tmp_path / "cache")  # the archive file itself
    [folder] = [p for p in (tmp_path / "cache").iterdir()]
    assert (folder / ".complete").is_file() and folder.name.startswith("cifar10-")

    def boom(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(cifar_mod, "safe_unpickle", boom)
    again = load_dataset("cifar10", str(tmp_path / "dl"), cache=tmp_path / "cache")
    assert again.df["path"].tolist() == first.df["path"].tolist()
    monkeypatch.undo()
    # an already extracted cifar-10-batches-py/ folder gives the same rows
    with tarfile.open(archive) as tf:
        tf.extractall(tmp_path / "ex", filter="data")
    for root in (tmp_path / "ex", tmp_path / "ex" / "cifar-10-batches-py"):
        m = load_dataset("cifar10", str(root), cache=tmp_path / "cache2")
        pd.testing.assert_frame_equal(m.df, first.df)


def test_cifar_interrupted_decode_leaves_no_cache(tmp_path, monkeypatch):
    make_cifar_archive(tmp_path / "dl", "cifar10")
    from PIL import Image

    real_save, calls = Image.Image.save, {"n": 0}

    def flaky_save(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 17:
            raise KeyboardInterrupt
        return real_save(self, *a, **k)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("cifar10", str(tmp_path / "dl"), cache=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # neither a final nor a temp folder
    monkeypatch.undo()
    m = load_dataset("cifar10", str(tmp_path / "dl"), cache=tmp_path / "cache")
    assert len(m) == 60


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps({"data": _Evil()}, protocol=2)
    with pytest.raises(SynaugError) as e:
        safe_unpickle(payload, "batch")
    assert "refusing to load global" in str(e.value) and "system" in str(e.value)
    assert not (tmp_path / "pwned").exists()
    # inside an archive: the adapter fails cleanly and caches nothing
    make_cifar_archive(tmp_path / "dl", "cifar10", replace={"data_batch_3": payload})
    with pytest.raises(SynaugError) as e:
        load_dataset("cifar10", str(tmp_path / "dl"), cache=tmp_path / "cache")
    assert "data_batch_3" in str(e.value)
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
    # plain numpy data of every pickle protocol still loads
    for proto in (2, 4, 5):
        d = safe_unpickle(pickle.dumps({"data": np.arange(6, dtype=np.uint8), "labels": [1, 2]}, protocol=proto))
        assert d["data"].tolist() == list(range(6)) and d["labels"] == [1, 2]


def test_cifar_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(SynaugError) as e:
        load_dataset("cifar10", str(tmp_path), cache=tmp_path / "c")
    assert "found neither cifar-10-python.tar.gz" in str(e.value)
    with pytest.raises(SynaugError):
        load_dataset("cifar100", None)
    bad = tmp_path / "cifar-100-python.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(SynaugError) as e:
        load_dataset("cifar100", str(tmp_path), cache=tmp_path / "c")
    assert "cannot read archive" in str(e.value) and "\n" not in str(e.value)
    # wrong array shape in a batch
    wrong = pickle.dumps({"data": np.zeros((3, 100), np.uint8), "labels": [0, 1, 2]}, protocol=2)
    make_cifar_archive(tmp_path / "w", "cifar10", replace={"test_batch": wrong})
    with pytest.raises(SynaugError) as e:
        load_dataset("cifar10", str(tmp_path / "w"), cache=tmp_path / "c")
    assert "expected uint8 data of shape (N, 3072)" in str(e.value)


def test_long_tail_of_a_cifar_format_archive(tmp_path):
    make_cifar_archive(tmp_path / "dl", "cifar10", train_per_class=20, test_per_class=1)
    m = load_dataset("cifar10", str(tmp_path / "dl"), cache=tmp_path / "cache")
    lt, held = make_long_tail(m, 10, seed=0)
    assert lt.class_counts("train").tolist() == long_tail_counts(10, 20, 10)
    assert len(held) + lt.class_counts("train").sum() == 200
    lt.validate(verify_files=True)


# ---------------------------------------------------------------------------- UTKFace
@pytest.mark.parametrize("name,expected", [
    ("25_0_2_20170116174525125.jpg.chip.jpg", (25, 0, 2)),
    ("1_1_0_20161219140623097.jpg", (1, 1, 0)),
    ("116_1_4_20170120134921760.jpg.chip.jpg", (116, 1, 4)),
    ("39_1_20170116174525125.jpg.chip.jpg", None),  # race missing (a real UTKFace file)
    ("25_2_0_20170116174525125.jpg", None),          # gender 2
    ("25_0_0_20170116174525125.txt", None),
    ("readme.jpg", None),
])
def test_parse_utkface_name(name, expected):
    assert parse_utkface_name(name) == expected


def _utk_tree(root: Path, per_cell: int = 10) -> None:
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for gender in (0, 1):
        for race in (0, 1, 2, 3, 4):
            for i in range(per_cell):
                n += 1
                suffix = ".jpg.chip.jpg" if i % 2 else ".jpg"
                (root / f"{20 + i}_{gender}_{race}_2017011617452{n:04d}{suffix}").write_bytes(b"jpeg")
    (root / "39_1_20170116174525125.jpg.chip.jpg").write_bytes(b"jpeg")  # malformed
    (root / "61_3_20170109150557335.jpg.chip.jpg").write_bytes(b"jpeg")  # malformed
    (root / "notes.txt").write_text("not an image")


def test_utkface_labels_groups_age_and_balanced_split(tmp_path, capsys):
    _utk_tree(tmp_path / "UTKFace", per_cell=10)
    m = load_dataset("utkface", str(tmp_path / "UTKFace"), test_per_cell=3, val_frac=0.2)
    err = capsys.readouterr().err
    assert "dropped 20 with race 4 (others)" in err and "skipped 2 malformed names" in err
    assert len(err.strip().splitlines()) == 1  # one line
    assert m.classes == ["male", "female"] and m.groups == ["White", "Black", "Asian", "Indian"]
    assert len(m) == 2 * 4 * 10
    assert m.cell_counts(None).tolist() == [[10] * 4, [10] * 4]
    assert m.df["age"].dtype.kind == "i" and sorted(set(m.df["age"])) == list(range(20, 30))
    # balanced: 3 test faces per (gender, race) cell; val: round(7 * 0.2) = 1 of the rest; train: 6
    for split, n in (("train", 6), ("val", 1), ("test", 3)):
        assert m.cell_counts(split).tolist() == [[n] * 4, [n] * 4]
    row = m.df[m.df["path"].str.startswith("25_1_3_")].iloc[0]
    assert (row["label"], row["group"], row["group_name"], row["age"]) == (1, 3, "Indian", 25)
    same = load_dataset("utkface", str(tmp_path / "UTKFace"), test_per_cell=3, val_frac=0.2, quiet=True)
    other = load_dataset("utkface", str(tmp_path / "UTKFace"), test_per_cell=3, val_frac=0.2, seed=5, quiet=True)
    assert same.df["split"].tolist() == m.df["split"].tolist()  # seeded
    assert other.df["split"].tolist() != m.df["split"].tolist()
    m.write(tmp_path / "utk.parquet")
    assert Manifest.read(tmp_path / "utk.parquet").df["age"].tolist() == m.df["age"].tolist()


def test_utkface_balanced_test_keeps_natural_imbalance_in_train(tmp_path):
    root = tmp_path / "u"
    root.mkdir()
    n = 0
    for gender, race, k in ((0, 0, 30), (1, 0, 12), (0, 1, 8), (1, 1, 20)):
        for i in range(k):
            n += 1
            (root / f"{30 + i % 50}_{gender}_{race}_2017011617{n:07d}.jpg.chip.jpg").write_bytes(b"x")
    m = load_dataset("utkface", str(root), test_per_cell=5, val_frac=0.0, quiet=True)
    assert m.cell_counts("test").tolist() == [[5, 5, 0, 0], [5, 5, 0, 0]]
    assert m.cell_counts("train").tolist() == [[25, 3, 0, 0], [7, 15, 0, 0]]
    # the stratified-fraction split stays as an option
    st = load_dataset("utkface", str(root), split="stratified", test_frac=0.5, val_frac=0.0, quiet=True)
    assert st.cell_counts("test").tolist() == [[15, 4, 0, 0], [6, 10, 0, 0]]


def _jung_make_data(features: list, num_groups: int, num_classes: int, min_cnt: int = 100):
    """Transcription of ``GenericDataset._make_data`` (naver-ai/cgl_fairness,
    data_handler/dataset_factory.py; the same in sangwon-jung94/FairDRO): walk the shuffled
    list backwards; the first ``min_cnt`` rows met of every (group, class) cell go to test."""
    data_count = np.zeros((num_groups, num_classes), dtype=int)
    tmp = []
    features = list(features)
    for i in reversed(features):  # the original also removes from the list it walks backwards
        s, l = int(i[0]), int(i[1])
        data_count[s, l] += 1
        if data_count[s, l] <= min_cnt:
            features.remove(i)
            tmp.append(i)
    return features, tmp


def test_balanced_split_picks_the_test_rows_of_jung_et_al():
    import random

    from synaug.data.utkface import balanced_split, last_per_cell

    rng = np.random.default_rng(0)
    feats = [[int(rng.integers(4)), int(rng.integers(2)), f"img_{i}.jpg"] for i in range(600)]
    random.seed(1)  # as UTKFaceDataset.__init__ does before _make_data
    random.shuffle(feats)
    train, test = _jung_make_data(feats, 4, 2, min_cnt=20)
    strata = np.array([s * 2 + l for s, l, _ in feats])
    ours = last_per_cell(strata, 20)
    assert {f[2] for f, t in zip(feats, ours) if t} == {f[2] for f in test}
    assert len(test) == 8 * 20 and len(train) == 600 - 160
    # the seeded split applies the same rule to its own permutation
    out = balanced_split(strata, 20, 0.25, seed=3)
    order = np.random.RandomState(3).permutation(len(strata))
    assert set(np.flatnonzero(out == "test")) == set(order[last_per_cell(strata[order], 20)])
    for c in range(8):
        rest = int((strata == c).sum()) - 20
        assert (out[strata == c] == "val").sum() == round(rest * 0.25)


def test_utkface_errors(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "39_1_20170116174525125.jpg.chip.jpg").write_bytes(b"x")
    with pytest.raises(SynaugError) as e:
        load_dataset("utkface", str(tmp_path / "bad"))
    assert "no UTKFace images" in str(e.value) and "1 image names did not parse" in str(e.value)
    with pytest.raises(SynaugError):
        load_dataset("utkface", str(tmp_path / "missing"))
    _utk_tree(tmp_path / "ok", per_cell=2)
    with pytest.raises(SynaugError, match="split fractions"):
        load_dataset("utkface", str(tmp_path / "ok"), split="stratified", val_frac=0.5, test_frac=0.6, quiet=True)
    with pytest.raises(SynaugError, match=r"cell male/White has 2 images: a balanced test set of 100 per cell"):
        load_dataset("utkface", str(tmp_path / "ok"), quiet=True)
    with pytest.raises(SynaugError, match="test_frac is an option of split=stratified"):
        load_dataset("utkface", str(tmp_path / "ok"), test_frac=0.5, quiet=True)
    with pytest.raises(SynaugError, match="test_per_cell is an option of split=balanced"):
        load_dataset("utkface", str(tmp_path / "ok"), split="stratified", test_per_cell=1, quiet=True)
    with pytest.raises(SynaugError, match="split must be one of balanced, stratified"):
        load_dataset("utkface", str(tmp_path / "ok"), split="random", quiet=True)


# ---------------------------------------------------------------------------- Waterbirds
def _waterbirds(root: Path, rows) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows, columns=["img_id", "img_filename", "y", "split", "place", "place_filename"])
    df.to_csv(root / "metadata.csv", index=False)
    return root


def test_waterbirds_groups_and_splits(tmp_path):
    rows, i = [], 0
    for y, place, split, n in [(0, 0, 0, 5), (0, 1, 0, 1), (1, 0, 0, 1), (1, 1, 0, 3),
                               (0, 0, 1, 2), (1, 1, 2, 2), (0, 1, 2, 2)]:
        for _ in range(n):
            i += 1
            rows.append([i, f"{y:03d}.Bird/img_{i}.jpg", y, split, place, f"/x/{i}.jpg"])
    m = load_dataset("waterbirds", str(_waterbirds(tmp_path / "wb", rows)))
    assert m.classes == ["landbird", "waterbird"]
    assert m.groups == ["land", "water"]  # group = the background; the four literature "groups" are cells
    assert m.cell_counts("train").tolist() == [[5, 1], [1, 3]]
    assert m.class_counts("val").tolist() == [2, 0] and m.class_counts("test").tolist() == [2, 2]
    r = m.df.iloc[6]  # y=1, place=0
    assert (r["label"], r["group"], r["group_name"], r["place"], r["split"]) == (1, 0, "land", 0, "train")
    assert m.abspaths()[0] == tmp_path / "wb" / "000.Bird/img_1.jpg"


@pytest.mark.parametrize("change,msg", [
    (lambda df: df.drop(columns=["place"]), "missing column 'place'"),
    (lambda df: df.assign(split=[0, 3]), "split = 3"),
    (lambda df: df.assign(y=[0, "bird"]), "y = 'bird'"),
    (lambda df: df.assign(img_filename=["a.jpg", "../b.jpg"]), "escapes the data root"),
])
def test_waterbirds_bad_metadata(tmp_path, change, msg):
    root = _waterbirds(tmp_path / "wb", [[1, "a.jpg", 0, 0, 0, "p"], [2, "b.jpg", 1, 0, 1, "q"]])
    change(pd.read_csv(root / "metadata.csv")).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(SynaugError) as e:
        load_dataset("waterbirds", str(root))
    assert msg in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------- ImageNet-LT lists
def _lists(root: Path, labels_train, labels_test, prefix="ImageNet_LT") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{prefix}_train.txt").write_text(
        "".join(f"train/n{lab:08d}/n{lab:08d}_{i}.JPEG {lab}\n" for i, lab in enumerate(labels_train)))
    (root / f"{prefix}_test.txt").write_text(
        "# comment\n\n" + "".join(f"val/ILSVRC2012_val_{i:08d}.JPEG {lab}\n" for i, lab in enumerate(labels_test)))


def test_imagenet_lt_lists_discovered_with_names(tmp_path):
    _lists(tmp_path / "inet", [0, 0, 0, 1, 2, 2], [0, 1, 2])
    (tmp_path / "inet" / "names.txt").write_text("tench\ngoldfish\nwhite shark\n")
    m = load_dataset("imagenet100-lt", str(tmp_path / "inet"), names="names.txt")
    assert m.classes == ["tench", "goldfish", "white shark"]
    assert m.class_counts("train").tolist() == [3, 1, 2] and m.class_counts("test").tolist() == [1, 1, 1]
    assert m.df["path"].iloc[0] == "train/n00000000/n00000000_0.JPEG"
    assert m.abspaths()[0] == tmp_path / "inet" / "train/n00000000/n00000000_0.JPEG"
    plain = load_dataset("imagenet-lt", str(tmp_path / "inet"))
    assert plain.classes == ["class_0", "class_1", "class_2"]


def test_imagenet_lt_subset_labels_are_compacted(tmp_path):
    _lists(tmp_path / "l", [7, 7, 42, 999], [42, 7, 999], prefix="ImageNet100_LT")
    (tmp_path / "l" / "ids.txt").write_text("7 seven\n42 forty-two\n999 last\n")
    m = load_dataset("imagenet-lt", str(tmp_path / "img"), train=str(tmp_path / "l" / "ImageNet100_LT_train.txt"),
                     test=str(tmp_path / "l" / "ImageNet100_LT_test.txt"), names=str(tmp_path / "l" / "ids.txt"))
    assert m.classes == ["seven", "forty-two", "last"]
    assert m.df["label"].tolist() == [0, 0, 1, 2, 1, 0, 2]
    assert m.df["orig_label"].tolist() == [7, 7, 42, 999, 42, 7, 999]
    assert m.roots["real"] == tmp_path / "img"


def test_imagenet_lt_errors(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(SynaugError) as e:
        load_dataset("imagenet-lt", str(tmp_path / "a"))
    assert "no train split list" in str(e.value)
    (tmp_path / "a" / "x_train.txt").write_text("train/a.JPEG 0\ntrain/b.JPEG\n")
    with pytest.raises(SynaugError) as e:
        load_dataset("imagenet-lt", str(tmp_path / "a"))
    assert "x_train.txt:2: expected '<path> <label>'" in str(e.value)
    (tmp_path / "a" / "x_train.txt").write_text("../escape.JPEG 0\n")
    with pytest.raises(SynaugError) as e:
        load_dataset("imagenet-lt", str(tmp_path / "a"))
    assert "escapes the data root" in str(e.value)


# ---------------------------------------------------------------------------- ImageFolder / table
def test_imagefolder_with_split_folders(image_folder):
    m = load_dataset("imagefolder", str(image_folder))
    assert m.classes == ["cat", "dog", "fox"]
    assert m.class_counts("train").tolist() == [6, 3, 1] and m.class_counts("test").tolist() == [2, 2, 2]
    m.validate(verify_files=True, expected_size=(32, 32))


def test_imagefolder_single_split_ignores_other_files(tmp_path, write_image):
    for cls, n in (("b_zebra", 2), ("a_ant", 1)):
        for i in range(n):
            write_image(tmp_path / "root" / cls / "sub" / f"{i}.JPG")
    (tmp_path / "root" / "a_ant" / "labels.txt").write_text("x")
    (tmp_path / "root" / "README").write_text("x")
    m = load_dataset("imagefolder", str(tmp_path / "root"))
    assert m.classes == ["a_ant", "b_zebra"]  # sorted like torchvision's ImageFolder
    assert m.df["path"].tolist() == ["a_ant/sub/0.JPG", "b_zebra/sub/0.JPG", "b_zebra/sub/1.JPG"]
    assert set(m.df["split"]) == {"train"}


def test_imagefolder_errors(tmp_path):
    with pytest.raises(SynaugError):
        load_dataset("imagefolder", str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynaugError) as e:
        load_dataset("imagefolder", str(tmp_path / "empty"))
    assert "no class folders" in str(e.value)


def test_table_adapter_reads_csv_and_parquet(tmp_path, image_folder):
    m = load_dataset("imagefolder", str(image_folder))
    m.write(tmp_path / "m.parquet")
    m.df[["path", "label", "class_name", "split"]].to_csv(image_folder / "plain.csv", index=False)
    for f in (tmp_path / "m.parquet", image_folder / "plain.csv"):
        t = load_dataset("table", str(f))
        assert t.classes == m.classes and t.df["path"].tolist() == m.df["path"].tolist()
        t.validate(verify_files=True)


def test_registry_lists_every_adapter():
    assert {"cifar10", "cifar100", "utkface", "waterbirds", "imagenet-lt", "imagenet100-lt", "imagefolder",
            "table", "shared-cifar10", "shared-sd14", "shared-utkface"} <= set(list_datasets())
    with pytest.raises(SynaugError) as e:
        load_dataset("mnist", None)
    assert "unknown dataset 'mnist'" in str(e.value)


# ---------------------------------------------------------------------------- the shared real data
def test_shared_cifar10_real_data():
    """The real CIFAR-10 JPEGs in ../shared/data (cached extraction in ~/.cache/synaug)."""
    m = load_dataset("shared-cifar10", None)
    assert len(m) == 60000
    assert m.class_counts("train").tolist() == [5000] * 10
    assert m.class_counts("test").tolist() == [1000] * 10
    assert m.classes[0] == "airplane" and m.classes[-1] == "truck"
    lt, held = make_long_tail(m, 100, seed=0)
    assert lt.class_counts("train").tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert len(held) == 50000 - 12406
    sample = lt.select(np.arange(len(lt)) % 2500 == 0)  # a few files decode as 32x32 RGB
    sample.validate(verify_files=True, expected_size=(32, 32))


def test_shared_sd14_generated_images():
    """The 49,080 Stable Diffusion 1.4 images of ../shared/data/cifake: all synthetic, no test rows."""
    m = load_dataset("shared-sd14", None)
    assert len(m) == 49080
    assert m.classes == load_dataset("shared-cifar10", None).classes  # CIFAR-10 label order
    assert m.class_counts("train").tolist() == [5000, 5000, 4731, 5000, 5000, 4654, 4695, 5000, 5000, 5000]
    assert set(m.df["source"]) == {"synthetic"} and set(m.df["split"]) == {"train"}
    assert set(m.df["generator"]) == {"Stable Diffusion 1.4 (CIFAKE)"}
    assert "real" not in m.roots and m.df["path"].str.startswith("sd14/").all()
    sample = m.select(np.arange(len(m)) % 5000 == 0)
    sample.validate(verify_files=True, expected_size=(32, 32))


def test_inspect_works_on_the_sd14_images(tmp_path, capsys):
    import json

    from synaug.cli import main

    assert main(["inspect", "--dataset", "shared-sd14", "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "inspect.json").read_text())
    assert out["num_images"] == 49080 and out["sources"] == {"real": 0, "synthetic": 49080}
    assert out["class_counts"][2] == 4731 and "49080 images" in capsys.readouterr().out


def test_shared_utkface_real_faces(capsys):
    """UTKFace from ../shared/data: 23,707 files - 1,692 race-4 faces - 5 malformed names = 22,010."""
    m = load_dataset("shared-utkface")
    err = capsys.readouterr().err.strip()
    assert err == ("synaug: utkface: using 22010 images; dropped 1692 with race 4 (others); skipped 5 malformed "
                   "names (e.g. '24_0_1_20170116220224657 .jpg.chip.jpg')")
    assert len(m) == 22010 and m.num_classes == 2 and m.num_groups == 4
    assert m.classes == ["male", "female"] and m.groups == ["White", "Black", "Asian", "Indian"]
    # (gender, race) counts of the shared README, races 0-3
    assert m.cell_counts(None).tolist() == [[5476, 2316, 1575, 2261], [4601, 2208, 1859, 1714]]
    assert m.cell_counts("test").tolist() == [[100] * 4, [100] * 4]  # balanced test set
    val = m.cell_counts("val")
    assert (np.abs(val - 0.1 * (m.cell_counts(None) - 100)) <= 0.5).all()
    assert m.df["age"].between(1, 116).all()
    sample = m.select(np.arange(len(m)) % 5000 == 0)
    sample.validate(verify_files=True, expected_size=(200, 200))


def test_shared_archive_checksum_mismatch_is_refused(tmp_path):
    """A tampered archive is refused before anything is extracted."""
    import tarfile

    fake = tmp_path / "shared" / "cifake"
    (tmp_path / "src" / "sd14" / "cat").mkdir(parents=True)
    (tmp_path / "src" / "sd14" / "cat" / "1000.jpg").write_bytes(b"not the real archive")
    fake.mkdir(parents=True)
    with tarfile.open(fake / "sd14.tar", "w") as tf:
        tf.add(tmp_path / "src" / "sd14", arcname="sd14")
    with pytest.raises(SynaugError, match=r"checksum mismatch for .*sd14\.tar"):
        load_dataset("shared-sd14", str(tmp_path / "shared"), cache=str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    with pytest.raises(SynaugError, match="shared archive not found"):
        load_dataset("shared-sd14", str(tmp_path / "nowhere"), cache=str(tmp_path / "cache2"))
