"""BatchNorm folding (tlkit.fold): same outputs and gradients, model unchanged afterwards."""
import pytest
import torch
from torch import nn

from tlkit import list_backbones, load_backbone
from tlkit.fold import FoldedBatchNorm2d, FoldedConv2d, conv_bn_pairs, fold_frozen_batchnorm
from tlkit.freezing import set_bn_policy
from tlkit.train import fit


def _with_real_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Untrained BN layers are the identity (mean 0, var 1, gamma 1, beta 0); give them values."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def _patched(model: nn.Module) -> list[str]:
    """Names of the stand-in modules currently in the model."""
    return [n for n, m in model.named_modules() if isinstance(m, (FoldedConv2d, FoldedBatchNorm2d))]


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_folds_every_batchnorm_and_gives_the_same_outputs(name):
    torch.manual_seed(0)
    model = _with_real_statistics(load_backbone(name, pretrained=False, num_classes=3)).eval()
    x = torch.randn(2, 3, 64, 64)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(conv_bn_pairs(model, x)) == n_bn  # ConvNeXt has none (LayerNorm): 0 == 0
    state = model.state_dict(keep_vars=True)
    modules = list(model.modules())
    with torch.no_grad():
        ref = model(x)
        with fold_frozen_batchnorm(model) as folded:
            assert folded == n_bn
            assert len(_patched(model)) == 2 * n_bn
            inside = model.state_dict(keep_vars=True)  # same keys, the very same tensors
            assert list(inside) == list(state) and all(inside[k] is state[k] for k in state)
            out = model(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert _patched(model) == [] and list(model.modules()) == modules  # exit puts the originals back


def test_training_step_is_the_same_with_and_without_folding(make_model):
    results = []
    for fold in (False, True):
        model = _with_real_statistics(make_model("mobilenet_v3_small", seed=1))
        model.train()
        set_bn_policy(model, "eval_all")  # BN statistics frozen, gamma and beta still train
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 1, 0])
        with fold_frozen_batchnorm(model, enabled=fold) as n:
            assert (n > 0) == fold
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            grads = {k: p.grad.clone() for k, p in model.named_parameters()}
            opt.step()
        results.append((loss.item(), grads, {k: v.clone() for k, v in model.state_dict().items()}))
    (l0, g0, s0), (l1, g1, s1) = results
    assert l1 == pytest.approx(l0, rel=1e-5)
    bn_weight = next(k for k in g0 if k.endswith(".weight") and g0[k].ndim == 1 and "head" not in k)
    assert g0[bn_weight].abs().sum() > 0  # gamma does get a gradient, folded or not
    for k in g0:
        assert torch.allclose(g1[k], g0[k], rtol=1e-3, atol=1e-6), k
    for k in s0:
        assert torch.allclose(s1[k].float(), s0[k].float(), rtol=1e-4, atol=1e-6), k


def test_batchnorm_in_training_mode_is_not_folded(make_model):
    model = _with_real_statistics(make_model("resnet18"))
    x = torch.randn(4, 3, 64, 64)
    ref_model = _with_real_statistics(make_model("resnet18")).train()
    ref = ref_model(x)
    model.train()  # every BN uses batch statistics and updates its running ones
    with fold_frozen_batchnorm(model) as n:
        assert n == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        out = model(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(model.modules(), ref_model.modules()):
        if isinstance(a, nn.BatchNorm2d):
            assert torch.equal(a.running_mean, b.running_mean) and a.num_batches_tracked == 1


class _Residual(nn.Module):
    """The conv output feeds the BN *and* a skip connection: folding would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        z = self.conv(x)
        return (self.bn(z) + z).mean((2, 3))


def test_a_model_where_folding_changes_the_result_is_left_alone():
    model = _with_real_statistics(_Residual()).eval()
    x = torch.randn(2, 3, 16, 16)
    ref = model(x)
    assert len(conv_bn_pairs(model, x)) == 1  # looks foldable ...
    with fold_frozen_batchnorm(model) as n:
        assert n == 0  # ... but the output check refuses
        assert torch.equal(model(x), ref) and _patched(model) == []


def test_modes_are_restored_and_errors_unpatch(make_model):
    model = make_model("resnet18").train()
    modes = {n: m.training for n, m in model.named_modules()}
    with pytest.raises(KeyError):
        with fold_frozen_batchnorm(model):
            assert _patched(model) and {n: m.training for n, m in model.named_modules()} == modes
            raise KeyError("boom")
    assert _patched(model) == [] and {n: m.training for n, m in model.named_modules()} == modes


def test_fit_gives_the_same_history_with_and_without_folding(make_model, tiny_datasets):
    train, val = tiny_datasets
    runs = []
    for fold in (False, True):
        model = make_model("mobilenet_v3_small", seed=3)
        set_bn_policy(model, "eval_all")
        runs.append(fit(model, train, val, epochs=2, lr=1e-3, batch_size=8, image_size=48, seed=0,
                        progress=False, num_workers=0, fold_bn=fold))
        assert _patched(model) == []
    assert runs[1]["train_loss"] == pytest.approx(runs[0]["train_loss"], rel=1e-4)
    assert runs[1]["val_loss"] == pytest.approx(runs[0]["val_loss"], rel=1e-4)
