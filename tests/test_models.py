"""Models: ResNet-32 shape/size, encoder/head split, torchvision + timm, cosine head."""
from __future__ import annotations

import pytest
import torch

from synaug.errors import SynaugError
from synaug.models import (Classifier, CosineLinear, count_parameters, create_model, list_models,
                           model_from_spec, reset_head)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_resnet32_matches_the_cifar_reference():
    m = create_model("resnet32", 100)
    assert isinstance(m, Classifier)
    # 3 stages x 5 basic blocks x 2 convs + stem conv = 31 convs (+ fc = 32 layers)
    convs = [x for x in m.encoder.modules() if isinstance(x, torch.nn.Conv2d)]
    assert len(convs) == 31
    assert [len(s) for s in (m.encoder.layer1, m.encoder.layer2, m.encoder.layer3)] == [5, 5, 5]
    assert {c.out_channels for c in convs} == {16, 32, 64}
    # 0.46M parameters for CIFAR-10 (He et al. 2016: 0.46M); +5,850 head params for 100 classes
    assert count_parameters(create_model("resnet32", 10)) == pytest.approx(0.464e6, rel=0.01)
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 100)
    assert m.features(x).shape == (2, 64)
    assert torch.allclose(m.head(m.features(x)), m(x), atol=1e-6)


def test_width_scales_channels():
    m = create_model("resnet32", 3, width=4)
    assert m.num_features == 16
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_torchvision_cifar_stem_keeps_resolution():
    plain = create_model("resnet18", 5)
    cifar = create_model("resnet18", 5, cifar_stem=True)
    assert isinstance(cifar.encoder.maxpool, torch.nn.Identity)
    assert cifar.encoder.conv1.kernel_size == (3, 3) and cifar.encoder.conv1.stride == (1, 1)
    assert plain.encoder.conv1.kernel_size == (7, 7)
    x = torch.randn(2, 3, 32, 32)
    assert cifar.features(x).shape == (2, 512) and cifar(x).shape == (2, 5)
    # the stem change shows in the spatial size reaching layer4: 4x4 vs 1x1
    enc = cifar.encoder
    h = enc.layer3(enc.layer2(enc.layer1(enc.maxpool(enc.relu(enc.bn1(enc.conv1(x)))))))
    assert enc.layer4(h).shape[-1] == 4


def test_resnet50_features():
    m = create_model("resnet50", 2, cifar_stem=True)
    assert m.num_features == 2048


def test_timm_model_by_name():
    pytest.importorskip("timm")
    m = create_model("timm/resnet10t", 4).eval()
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 4)
    assert m.features(x).shape == (2, m.num_features) and m.num_features == 512


def test_unknown_model_is_one_line_error():
    with pytest.raises(SynaugError, match="unknown model"):
        create_model("resnet-does-not-exist", 3)


def test_spec_round_trip_rebuilds_same_architecture():
    m = create_model("resnet20", 7, width=8, head="cosine")
    m2 = model_from_spec(m.spec)
    assert isinstance(m2.head, CosineLinear)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 32, 32)
    m.eval(), m2.eval()
    assert torch.equal(m(x), m2(x))
    assert "resnet32" in list_models()


def test_cosine_head_outputs_cosines():
    h = CosineLinear(8, 3)
    f = torch.randn(5, 8)
    out = h(f)
    ref = torch.nn.functional.cosine_similarity(f[:, None, :], h.weight[None], dim=2)
    assert torch.allclose(out, ref, atol=1e-6)
    assert out.abs().max() <= 1 + 1e-6


def test_reset_head_is_seeded():
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    reset_head(a, 5)
    reset_head(b, 5)
    assert torch.equal(a.weight, b.weight)
    reset_head(b, 6)
    assert not torch.equal(a.weight, b.weight)
