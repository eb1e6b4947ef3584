"""Fast data path: decode cache, batched crop/flip, normalisation, Mixup, leakage guard."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synaug.errors import SynaugError
from synaug.manifest import Manifest
from synaug.train.config import DataConfig, TrainConfig
from synaug.train.data import ImageSet, crop_flip, decode_manifest, epoch_order, refuse_test_rows
from synaug.train.step import CUTMIX, MIXUP, draw_mix_plan, mix_batch
from synaug.train.toydata import make_toy_manifest


pytestmark = pytest.mark.usefixtures("one_thread")


CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    tr = make_toy_manifest(root, [6, 4, 2], size=16, seed=0)
    te = make_toy_manifest(root, [2, 2, 2], size=16, seed=1, split="test")
    return root, tr, te


def test_decode_matches_pil_and_is_cached(toy, tmp_path):
    from PIL import Image

    _, tr, _ = toy
    x = decode_manifest(tr, cache_dir=tmp_path)
    assert x.dtype == torch.uint8 and x.shape == (12, 3, 16, 16)
    ref = np.asarray(Image.open(tr.abspaths()[5]).convert("RGB")).transpose(2, 0, 1)
    assert (x[5].numpy() == ref).all()
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    # a cache hit returns the stored array (poison it to prove the file is what is read)
    arr = np.load(files[0])
    arr[0] = 7
    np.save(files[0], arr)
    assert (decode_manifest(tr, cache_dir=tmp_path)[0] == 7).all()
    # touching an image changes the key -> re-decoded, a second cache file
    p = tr.abspaths()[0]
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    y = decode_manifest(tr, cache_dir=tmp_path)
    assert not (y[0] == 7).all() and len(list(tmp_path.glob("*.npy"))) == 2


def test_decode_resizes_and_rejects_mixed_sizes(tmp_path):
    import shutil

    a = make_toy_manifest(tmp_path / "a", [2], size=16, seed=0)
    b = make_toy_manifest(tmp_path / "b", [1], size=20, seed=0)
    assert decode_manifest(a, image_size=8, use_cache=False).shape == (2, 3, 8, 8)
    shutil.copy(b.abspaths()[0], a.abspaths()[1])  # now one 16x16 and one 20x20 image
    with pytest.raises(SynaugError, match="image_size"):
        decode_manifest(a, use_cache=False)
    assert decode_manifest(a, image_size=12, use_cache=False).shape == (2, 3, 12, 12)


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).reshape(2, 3, 8, 8).to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = crop_flip(x, 2, False, g)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(2):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert hits, "output is not a crop of the padded image"
    # flip only (no padding): each image is either identical or mirrored
    out = crop_flip(x, 0, True, torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))


def test_crop_flip_distribution():
    x = torch.zeros(4000, 1, 4, 4, dtype=torch.uint8)
    x[:, :, :, 0] = 255  # left column marks flips
    out = crop_flip(x, 0, True, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, -1] == 255).float().mean().item()
    assert flipped == pytest.approx(0.5, abs=0.03)
    one = torch.ones(4000, 1, 4, 4, dtype=torch.uint8)
    out = crop_flip(one, 1, False, torch.Generator().manual_seed(0))
    # offset 0 in y puts a padded zero row on top: P = 1/3 for padding 1
    assert (out[:, 0, 0, 1] == 0).float().mean().item() == pytest.approx(1 / 3, abs=0.03)


def test_normalisation_and_channels_last(toy, tmp_path):
    _, tr, _ = toy
    s = ImageSet(tr, DataConfig(cache_dir=str(tmp_path)), "training", CPU, channels_last=True,
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    b = next(s.batches(torch.arange(4), 4, None, torch.Generator()))
    raw = s.images[:4].float() / 255
    assert torch.allclose(b.x, (raw - 0.5) / 0.25, atol=1e-5)
    assert b.x.is_contiguous(memory_format=torch.channels_last)
    assert b.y.tolist() == tr.df.label[:4].tolist()


def test_stream_path_serves_the_same_pixels(toy, tmp_path):
    _, tr, _ = toy
    mem = ImageSet(tr, DataConfig(mode="memory", cache_dir=str(tmp_path)), "training", CPU)
    stream = ImageSet(tr, DataConfig(mode="stream", num_workers=0), "training", CPU)
    order = torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))
    a = torch.cat([b.x for b in mem.batches(order, 5, None, torch.Generator())])
    b_ = [b for b in stream.batches(order, 5, None, torch.Generator())]
    assert torch.allclose(a, torch.cat([b.x for b in b_]))
    assert torch.equal(torch.cat([b.index for b in b_]), order)


def test_ranks_split_every_global_batch(toy, tmp_path):
    _, tr, _ = toy
    s = ImageSet(tr, DataConfig(cache_dir=str(tmp_path)), "training", CPU)
    order = torch.arange(12)
    r0 = [b.index.tolist() for b in s.batches(order, 4, None, torch.Generator(), rank=0, world=2)]
    r1 = [b.index.tolist() for b in s.batches(order, 4, None, torch.Generator(), rank=1, world=2)]
    assert r0 == [[0, 2], [4, 6], [8, 10]] and r1 == [[1, 3], [5, 7], [9, 11]]


def test_epoch_order_shuffle_and_resample():
    g = torch.Generator().manual_seed(0)
    assert sorted(epoch_order(10, g).tolist()) == list(range(10))
    w = torch.tensor([0.0, 1.0, 0.0])
    assert set(epoch_order(3, g, w).tolist()) == {1}


def _mix(cfg: TrainConfig, x, y, C, seed):
    """Draw a one-batch plan as the training step does and apply it."""
    p = draw_mix_plan(np.random.default_rng(seed), [len(x)], tuple(x.shape[-2:]), cfg.mix, True)
    xm, t = mix_batch(x, F.one_hot(y, C).float(), torch.from_numpy(p.pair[0]), torch.tensor(p.img_w[:1]),
                      torch.tensor(p.lab_w[:1]), torch.from_numpy(p.box[0]))
    return p, xm, t


def test_mixup_mixes_images_and_labels():
    cfg = TrainConfig.model_validate({"mix": {"mixup": True, "mixup_alpha": 1.0}})
    x = torch.stack([torch.full((3, 4, 4), float(i)) for i in range(6)])
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    p, xm, t = _mix(cfg, x, y, 3, 0)
    assert p.kind[0] == MIXUP
    assert t.shape == (6, 3) and torch.allclose(t.sum(1), torch.ones(6))
    lam, j = float(p.lab_w[0]), int(p.pair[0][0])
    assert 0 < lam < 1 and j != 0
    assert torch.allclose(xm[0], lam * x[0] + (1 - lam) * x[j], atol=1e-5)  # row 0 mixed with its partner
    assert torch.allclose(t[0], lam * F.one_hot(y[0], 3).float() + (1 - lam) * F.one_hot(y[j], 3).float())


def test_cutmix_labels_follow_pasted_area():
    cfg = TrainConfig.model_validate({"mix": {"mixup": False, "cutmix": True, "cutmix_prob": 1.0}})
    x = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(4)])
    for seed in range(5):
        p, xm, t = _mix(cfg, x, torch.arange(4), 4, seed)
        assert p.kind[0] == CUTMIX
        for i in range(4):
            own = (xm[i] == i).float().mean().item()
            assert t[i, i].item() == pytest.approx(own, abs=1e-6)


def test_refuse_test_rows(toy, tmp_path):
    _, tr, te = toy
    refuse_test_rows(tr, "training")  # no test rows: fine
    both = Manifest.concat([tr, te])
    with pytest.raises(SynaugError, match="refusing 6 test-split row"):
        refuse_test_rows(both, "training")
    for purpose in ("training", "fine-tuning", "model selection"):
        with pytest.raises(SynaugError, match="test split"):
            ImageSet(both, DataConfig(cache_dir=str(tmp_path)), purpose, CPU)
    # the final evaluation may read test rows
    assert len(ImageSet(te, DataConfig(cache_dir=str(tmp_path)), "evaluation", CPU)) == 6


def test_stream_path_augments_in_workers_reproducibly(toy):
    from synaug.train.config import AugmentConfig

    _, tr, _ = toy
    s = ImageSet(tr, DataConfig(mode="stream", num_workers=1), "training", CPU)
    aug = AugmentConfig(crop_padding=2, flip=True)
    run = lambda: torch.cat([b.x for b in s.batches(torch.arange(12), 6, aug, torch.Generator().manual_seed(4))])  # noqa: E731
    a, b = run(), run()
    assert a.shape == (12, 3, 16, 16) and torch.equal(a, b)
    plain = torch.cat([b.x for b in s.batches(torch.arange(12), 6, None, torch.Generator())])
    assert not torch.equal(a, plain)
