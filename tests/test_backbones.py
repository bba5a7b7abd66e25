import pytest
import torch

from hashdistill._torchvision import ensure_torchvision
from hashdistill.augment import ViewTransform, view_groups
from hashdistill.backbones import BACKBONES, create_backbone
from hashdistill.config import load_config
from hashdistill.errors import ModelError
from hashdistill.model import HashModel, build_model


def test_small_cnn_and_hash_model_shapes():
    m = HashModel(32, "small-cnn", n_proxies=10).eval()
    h = m(torch.rand(4, 3, 28, 28))
    assert h.shape == (4, 32) and h.abs().max() <= 1
    assert m.proxies.shape == (10, 32) and m.head.fc.bias is None
    head = HashModel(16, None, n_proxies=3, feature_dim=20)
    assert head(torch.randn(5, 20)).shape == (5, 16)


def test_proxies_start_uniform_up_to_the_xavier_bound_of_model_proxy_gain():
    """model.proxy_gain scales the proxies' Xavier-uniform start: every value within gain * sqrt(6 / (N + K)),
    the largest of the 76 x 16 near it (1,216 uniform draws all miss the top 5 % with probability 0.95^1216)."""
    for gain in (1.0, 0.02):
        torch.manual_seed(0)
        cfg = load_config(None, ["model.bits=16", f"model.proxy_gain={gain}"])
        p = build_model(cfg, n_proxies=76, feature_dim=20).proxies.detach().abs()
        bound = gain * (6 / (76 + 16)) ** 0.5
        assert bound * 0.95 < p.max() <= bound
    with pytest.raises(ModelError, match="proxy_gain must be > 0, got nan"):
        HashModel(16, None, n_proxies=3, feature_dim=20, proxy_gain=float("nan"))


def test_offline_imagenet_weights_load():
    """The offline packages' ImageNet weights: the backbone is no longer its random initialisation."""
    torch.manual_seed(0)
    x = torch.rand(2, 1, 64, 64)  # grey input is repeated to 3 channels
    for name in ("mobilenet_v2", "efficientnet_lite0"):
        trained, dim = create_backbone(name, pretrained=True)
        random, _ = create_backbone(name, pretrained=False)
        assert dim == 1280
        a, b = trained.eval()(x), random.eval()(x)
        assert a.shape == (2, 1280) and not torch.allclose(a, b)


def test_registry_errors():
    with pytest.raises(ValueError, match="known: alexnet, .*small-cnn"):
        create_backbone("resnet9000")
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_backbone("small-cnn", pretrained=True)
    assert {"alexnet", "resnet50", "vit_base_patch16_224", "swin_base_patch4_window7_224"} <= set(BACKBONES)


def test_view_groups():
    x = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8)
    teacher, student, clean = view_groups(24, 0.5, crop_ratio=0.875)
    assert teacher.s == 0.5 and student.s == 1.0 and clean.s == 0.0
    c1, c2 = clean(x), clean(x)
    assert c1.shape == (6, 3, 24, 24) and torch.equal(c1, c2)  # clean views are deterministic
    torch.manual_seed(1)
    s1 = student(x)
    torch.manual_seed(1)
    assert torch.equal(s1, student(x))  # augmentation follows the torch seed
    assert not torch.equal(s1, c1)
    # the teacher group scales every probability by s_T
    probs = [t.p for t in teacher.augment]
    assert probs == pytest.approx([0.5 * p for p in (t.p for t in student.augment)])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ViewTransform(24, 1.5)


def test_mobilenet_v2_cut_after_a_block_pools_that_block():
    net, width = create_backbone("mobilenet_v2", True, layer=14)
    assert width == 160 and len(net.body.features) == 15
    with torch.inference_mode():
        assert net.eval()(torch.rand(2, 1, 64, 64)).shape == (2, 160)
    with pytest.raises(ValueError, match="blocks 0-18"):
        create_backbone("mobilenet_v2", True, layer=19)
    with pytest.raises(ValueError, match="mobilenet_v2 only"):
        create_backbone("small-cnn", False, layer=3)


def test_feature_spec_names_round_trip_and_bad_names_fail():
    from hashdistill.features import feature_name, parse_feature_spec

    spec = parse_feature_spec("mobilenet_v2@64/14")
    assert spec == {"backbone": "mobilenet_v2", "pretrained": True, "input_size": 64, "layer": 14}
    assert (
        feature_name(spec) == "mobilenet_v2@64/14" and feature_name(parse_feature_spec("mobilenet_v2@32")) == "mobilenet_v2@32"
    )
    with pytest.raises(ValueError, match="BACKBONE@SIZE"):
        parse_feature_spec("mobilenet_v2")


def test_a_backbone_is_built_for_its_input_size_or_names_the_smallest_that_works():
    net, dim = create_backbone("vit_base_patch16_224", input_size=56)  # timm's img_size: 56 px works
    with torch.no_grad():
        assert net.eval()(torch.zeros(2, 3, 56, 56)).shape == (2, dim)
    with pytest.raises(
        ValueError, match=r"alexnet cannot take 56 x 56 input \(model.input_size\): the smallest that works is 63"
    ):
        create_backbone("alexnet", input_size=56)
    net, _ = create_backbone("alexnet", input_size=63)
    assert net.training  # the size check leaves the network as it found it


def test_hub_weights_offline_fail_fast_with_the_offline_options():
    """Without a network (CI), hub weights fail in one line naming what works offline, in seconds, not after
    a minute of retries; where a network or a cached copy exists the weights simply load (skipped)."""
    import socket
    import time

    import torchvision

    from hashdistill.hub import timm_cached_file, torch_hub_file

    ensure_torchvision()
    for host in ("download.pytorch.org", "huggingface.co"):
        try:
            socket.create_connection((host, 443), timeout=3).close()
            pytest.skip(f"{host} is reachable here")
        except OSError:
            pass
    for name in ("resnet50", "vit_base_patch16_224"):
        url = torchvision.models.get_model_weights(name).DEFAULT.url if name == "resnet50" else None
        if (url and torch_hub_file(url).is_file()) or (not url and timm_cached_file(name)):
            continue
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match=rf"^{name}: its ImageNet weights are not cached and .* cannot be reached .*"
                                             r"offline, pass model.pretrained=/path/to/weights.pth, or use mobilenet_v2"):  # fmt: skip
            create_backbone(name, pretrained=True)
        assert time.perf_counter() - t0 < 20
