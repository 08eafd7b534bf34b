"""BatchNorm adaptation (tlkit.adapt): only running statistics change, modes and momenta come back."""
import pytest
import torch

from tlkit.adapt import adapt_batchnorm, adapted_copy, batchnorm_layers
from tlkit.backbones import list_backbones, load_backbone
from tlkit.data import transforms_for
from tlkit.feature_cache import body_fingerprint
from tlkit.features import extract_features
from tlkit.freezing import freeze
from tlkit.shifts import shifted

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _stats_names(model):
    return {n for n, m in model.named_modules() if m in set(batchnorm_layers(model))}


def test_only_running_statistics_change_and_params_stay_bit_identical(lite0_64):
    before = _snapshot(lite0_64)
    params = {k: v.clone() for k, v in lite0_64.named_parameters()}
    grads_before = [p.grad for p in lite0_64.parameters()]
    x = torch.rand(12, 3, 32, 32) * 3 + 1  # far from ImageNet-normalised inputs: the statistics must move
    report = adapt_batchnorm(lite0_64, x, batch_size=4, progress=False)
    assert (report.layers, report.images) == (len(batchnorm_layers(lite0_64)), 12)
    after = lite0_64.state_dict()
    for name, p in lite0_64.named_parameters():
        assert torch.equal(p, params[name]) and p.dtype == params[name].dtype, name  # bit for bit
    assert all(p.grad is None for p in lite0_64.parameters()) and all(g is None for g in grads_before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    bn_names = _stats_names(lite0_64)
    assert changed and all(k.rsplit(".", 1)[0] in bn_names and k.rsplit(".", 1)[1] in
                           ("running_mean", "running_var", "num_batches_tracked") for k in changed)
    assert all(int(bn.num_batches_tracked) == 3 for bn in batchnorm_layers(lite0_64))  # 12 images / 4


def test_statistics_are_the_cumulative_average_over_batches():
    bn = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=0.3))
    x = torch.randn(8, 3, 5, 5) * 2 + 4
    adapt_batchnorm(bn, x, batch_size=4, progress=False)
    halves = x.split(4)
    mean = torch.stack([h.mean((0, 2, 3)) for h in halves]).mean(0)
    var = torch.stack([h.var((0, 2, 3), unbiased=True) for h in halves]).mean(0)
    assert torch.allclose(bn[0].running_mean, mean, atol=1e-5)
    assert torch.allclose(bn[0].running_var, var, atol=1e-4)
    assert bn[0].momentum == 0.3  # restored


def test_modes_and_momenta_are_restored(lite0_64):
    freeze(lite0_64, lite0_64.group_names[:-1])
    lite0_64.train()
    lite0_64.groups["stem"].eval()  # a hand-set mode must survive too
    modes = {n: m.training for n, m in lite0_64.named_modules()}
    momenta = {n: m.momentum for n, m in lite0_64.named_modules() if m in set(batchnorm_layers(lite0_64))}
    assert len(set(modes.values())) == 2  # a mix of train and eval
    adapt_batchnorm(lite0_64, torch.rand(4, 3, 32, 32), progress=False)
    assert {n: m.training for n, m in lite0_64.named_modules()} == modes
    assert {n: lite0_64.get_submodule(n).momentum for n in momenta} == momenta


def test_an_error_mid_pass_restores_the_old_statistics(lite0_64):
    before = _snapshot(lite0_64)
    modes = {n: m.training for n, m in lite0_64.named_modules()}

    def batches():
        yield torch.rand(4, 3, 32, 32)
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        adapt_batchnorm(lite0_64, batches(), progress=False)
    assert all(torch.equal(v, lite0_64.state_dict()[k]) for k, v in before.items())
    assert {n: m.training for n, m in lite0_64.named_modules()} == modes
    assert all(bn.momentum is not None for bn in batchnorm_layers(lite0_64))


def test_refuses_a_model_without_batchnorm():
    model = load_backbone("convnext_tiny", pretrained=False, num_classes=2)
    with pytest.raises(ValueError, match="no BatchNorm.*efficientnet_lite0"):
        adapt_batchnorm(model, torch.rand(2, 3, 32, 32), progress=False)


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"max_images": 0}, {"batch_size": 2.5}])
def test_rejects_bad_counts(lite0_64, bad):
    with pytest.raises(ValueError, match="at least 1"):
        adapt_batchnorm(lite0_64, torch.rand(4, 3, 32, 32), progress=False, **bad)


def test_rejects_bad_data(lite0_64):
    with pytest.raises(TypeError, match="ImageDataset"):
        adapt_batchnorm(lite0_64, 3, progress=False)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        adapt_batchnorm(lite0_64, torch.rand(3, 32, 32), progress=False)
    with pytest.raises(ValueError, match="no batch of at least 2 images"):
        adapt_batchnorm(lite0_64, [], progress=False)
    with pytest.raises(ValueError, match="no batch of at least 2 images"):
        adapt_batchnorm(lite0_64, torch.rand(3, 3, 32, 32), batch_size=1, progress=False)


def test_a_trailing_batch_of_one_image_is_left_out(lite0_64):
    report = adapt_batchnorm(lite0_64, torch.rand(5, 3, 32, 32), batch_size=2, progress=False)
    assert report.images == 4 and all(int(bn.num_batches_tracked) == 2 for bn in batchnorm_layers(lite0_64))


@pytest.mark.parametrize("name", [n for n in list_backbones() if n != "convnext_tiny"])
def test_every_registry_backbone_with_batchnorm(name):
    torch.manual_seed(0)
    model = load_backbone(name, pretrained=False, num_classes=2)
    params = {k: v.clone() for k, v in model.named_parameters()}
    means = [bn.running_mean.clone() for bn in batchnorm_layers(model)]
    report = adapt_batchnorm(model, torch.rand(4, 3, 32, 32) + 2, batch_size=2, progress=False)
    assert report.layers == len(means) > 0 and report.images == 4
    assert all(torch.equal(p, params[k]) for k, p in model.named_parameters())
    assert not any(torch.equal(m, bn.running_mean) for m, bn in zip(means, batchnorm_layers(model)))
    assert not model.training


def test_dataset_input_max_images_and_a_new_feature_cache_key(tiny_datasets, lite0_64, tmp_path):
    train, val = tiny_datasets
    tf = transforms_for(lite0_64, image_size=32)
    before = extract_features(lite0_64, val.with_transform(tf), cache_dir=tmp_path, progress=False)
    fingerprint = body_fingerprint(lite0_64)
    report = adapt_batchnorm(lite0_64, shifted(train, "dark:4"), max_images=10, batch_size=4, progress=False)
    assert report.images == 10
    assert all(int(bn.num_batches_tracked) == 3 for bn in batchnorm_layers(lite0_64))  # 4 + 4 + 2
    assert body_fingerprint(lite0_64) != fingerprint
    after = extract_features(lite0_64, val.with_transform(tf), cache_dir=tmp_path, progress=False)
    assert not after.from_cache and not torch.allclose(before.features, after.features)
    again = extract_features(lite0_64, val.with_transform(tf), cache_dir=tmp_path, progress=False)
    assert again.from_cache and torch.equal(again.features, after.features)


def test_adapted_copy_leaves_the_model_alone_and_trains_a_head_on_source_statistics(tiny_datasets, lite0_64,
                                                                                    tmp_path):
    from tlkit.features import train_head
    train, val = tiny_datasets
    tf = transforms_for(lite0_64, image_size=32)
    before = _snapshot(lite0_64)
    source = adapted_copy(lite0_64, train.with_transform(tf), batch_size=8, progress=False)
    assert all(torch.equal(v, lite0_64.state_dict()[k]) for k, v in before.items())
    assert body_fingerprint(source) != body_fingerprint(lite0_64)
    imagenet_feats = extract_features(lite0_64, train.with_transform(tf), cache_dir=tmp_path, progress=False)
    source_feats = extract_features(source, train.with_transform(tf), cache_dir=tmp_path, progress=False)
    assert not source_feats.from_cache and not torch.allclose(imagenet_feats.features, source_feats.features)
    head, history = train_head(source_feats, extract_features(source, val.with_transform(tf), cache_dir=tmp_path,
                                                              progress=False), epochs=3)
    assert len(history) == 3 and head(source_feats.features).shape == (len(train), 2)
