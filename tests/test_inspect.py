"""``synaug inspect`` and :func:`inspect_manifest`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synaug.cli import main
from synaug.inspect import bucket_of, histogram_png, inspect_manifest


@pytest.mark.parametrize("count,bucket", [(0, "few"), (19, "few"), (20, "medium"), (100, "medium"),
                                          (101, "many"), (5000, "many")])
def test_bucket_edges_follow_the_paper(count, bucket):
    assert bucket_of(count) == bucket


def test_inspect_manifest_classes_buckets_and_imbalance(make_manifest):
    m = make_manifest([150, 101, 100, 20, 19, 3, 0], extra_splits={"test": [5] * 7})
    s = inspect_manifest(m)
    assert s["num_images"] == 393 and s["num_classes"] == 7
    assert s["class_counts"] == [150, 101, 100, 20, 19, 3, 0]
    assert s["imbalance_factor"] == pytest.approx(50.0)  # 150 / 3: empty classes do not count
    assert s["empty_classes"] == ["c6"]
    assert [c["bucket"] for c in s["classes"]] == ["many", "many", "medium", "medium", "few", "few", "few"]
    assert s["buckets"]["many"] == {"classes": 2, "images": 251, "names": ["c0", "c1"]}
    assert s["buckets"]["medium"]["images"] == 120 and s["buckets"]["few"]["classes"] == 3
    assert s["splits"] == {"train": 393, "val": 0, "test": 35}
    assert s["sources"] == {"real": 428, "synthetic": 0}
    assert s["groups"] is None and "cell_counts" not in s
    t = inspect_manifest(m, split="test")
    assert t["class_counts"] == [5] * 7 and t["imbalance_factor"] == 1.0
    assert json.loads(json.dumps(s)) == s  # JSON-ready


def test_inspect_manifest_with_groups(make_manifest):
    m = make_manifest([[30, 2], [0, 8], [0, 0]], groups=["White", "Black"])
    s = inspect_manifest(m)
    assert s["groups"] == ["White", "Black"]
    assert s["cell_counts"] == [[30, 2], [0, 8], [0, 0]]
    assert s["group_counts"] == [30, 10]
    assert s["class_counts"] == [32, 8, 0]
    assert s["imbalance_factor"] == pytest.approx(4.0)
    assert s["cell_imbalance_factor"] == pytest.approx(15.0)
    assert s["no_group_rows"] == 0


def test_inspect_manifest_all_empty_split(make_manifest):
    s = inspect_manifest(make_manifest([3, 4]), split="val")
    assert s["num_images"] == 0 and s["imbalance_factor"] is None and s["empty_classes"] == ["c0", "c1"]
    with pytest.raises(Exception, match="not one of"):
        inspect_manifest(make_manifest([3]), split="training")


def _png_size(data: bytes):
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(data)) as im:
        im.load()
        return im.size, np.asarray(im.convert("RGB"))


def test_histogram_colours_bars_by_bucket_and_adds_group_panels(make_manifest):
    plain = histogram_png(inspect_manifest(make_manifest([300, 50, 5])))
    (w1, h1), px = _png_size(plain)
    colours = {tuple(v) for v in px.reshape(-1, 3)}
    for hex_ in ("#1f77b4", "#ff7f0e", "#d62728"):  # many / medium / few bars are drawn
        assert tuple(int(hex_[i:i + 2], 16) for i in (1, 3, 5)) in colours
    grouped = histogram_png(inspect_manifest(make_manifest([[30, 2], [0, 8]], groups=["a", "b"])))
    (w2, h2), _ = _png_size(grouped)
    assert h2 > 2.5 * h1  # one panel for all + one per group
    many = histogram_png(inspect_manifest(make_manifest(list(range(1, 121)))))
    assert _png_size(many)[0][0] > w1  # wide figure for many classes


def test_cli_inspect_table_json_and_files(image_folder, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["inspect", "--dataset", "imagefolder", "--data-root", str(image_folder), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train: 10 images, 3 classes, imbalance factor 6.00" in printed
    assert "cat" in printed and "few" in printed and "wrote" in printed
    s = json.loads((out / "inspect.json").read_text())
    assert s["class_counts"] == [6, 3, 1] and s["imbalance_factor"] == 6.0
    assert _png_size((out / "histogram.png").read_bytes())[0][0] >= 600
    assert sorted(p.name for p in out.iterdir()) == ["histogram.png", "inspect.json"]  # no temp files left
    rc = main(["inspect", "--dataset", "imagefolder", "--data-root", str(image_folder), "--json",
               "--split", "test"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["class_counts"] == [2, 2, 2]


def test_cli_inspect_long_tailed_manifest_file(image_folder, tmp_path, capsys):
    from synaug.data import load_dataset

    load_dataset("imagefolder", str(image_folder)).write(tmp_path / "m.csv")
    rc = main(["inspect", "--manifest", str(tmp_path / "m.csv"), "--imbalance-factor", "6", "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["class_counts"] == [6, 2, 1]  # floor(6 * 6^-0.5) = 2


@pytest.mark.parametrize("argv,msg", [
    ([], "give exactly one of --manifest or --dataset"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--dataset", "imagefolder", "--data-root", "/nonexistent/x"], "image folder not found"),
    (["--manifest", "/nonexistent/m.csv"], "manifest file not found"),
    (["--dataset", "imagefolder", "--data-root", "{root}", "--imbalance-factor", "0.5"], "imbalance factor must be >= 1"),
    (["--dataset", "imagefolder", "--data-root", "{root}", "--imbalance-factor", "2"], "has 3 train images, the long tail needs 4"),
    (["--dataset", "imagefolder", "--data-root", "{root}", "--dataset-opt", "x"], "must look like key=value"),
])
def test_cli_inspect_bad_input_exit_2_one_line(image_folder, tmp_path, capsys, argv, msg):
    out = tmp_path / "o"
    argv = [a.replace("{root}", str(image_folder)) for a in argv]
    rc = main(["inspect", *argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("synaug: error: ") and msg in err and err.count("\n") == 1
    assert not out.exists()  # bad input leaves no output


def test_cli_inspect_out_must_be_a_folder(image_folder, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    rc = main(["inspect", "--dataset", "imagefolder", "--data-root", str(image_folder), "--out", str(tmp_path / "file")])
    assert rc == 2 and "is not a folder" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"


def test_cli_inspect_subprocess(image_folder, tmp_path):
    exe = Path(sys.executable).with_name("synaug")
    r = subprocess.run([str(exe), "inspect", "--dataset", "imagefolder", "--data-root", str(image_folder),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "histogram.png").is_file() and (tmp_path / "o" / "inspect.json").is_file()
    r = subprocess.run([str(exe), "inspect", "--dataset", "imagefolder"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr == "synaug: error: imagefolder needs --data-root\n"


def test_cli_inspect_groups_with_dataset_options(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "utk"
    root.mkdir()
    n = 0
    for gender, race, k in ((0, 0, 6), (1, 0, 2), (0, 1, 4), (1, 1, 4), (1, 4, 3)):
        for i in range(k):
            n += 1  # inspect checks every image file: real (tiny) JPEGs
            Image.new("RGB", (4, 4)).save(root / f"{30 + i}_{gender}_{race}_201701161745{n:05d}.jpg.chip.jpg", "JPEG")
    rc = main(["inspect", "--dataset", "utkface", "--data-root", str(root), "--dataset-opt", "split=stratified",
               "--dataset-opt", "test_frac=0.5", "--dataset-opt", "val_frac=0", "--out", str(tmp_path / "o")])
    cap = capsys.readouterr()
    assert rc == 0
    assert "dropped 3 with race 4" in cap.err
    assert "White" in cap.out and "Black" in cap.out and "total" in cap.out
    s = json.loads((tmp_path / "o" / "inspect.json").read_text())
    assert s["groups"] == ["White", "Black", "Asian", "Indian"]
    assert s["cell_counts"] == [[3, 2, 0, 0], [1, 2, 0, 0]]  # half of every (gender, race) cell is test
    assert s["group_counts"] == [4, 4, 0, 0] and s["cell_imbalance_factor"] == 3.0
