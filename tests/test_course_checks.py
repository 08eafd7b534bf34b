"""Claim checks: the sentences of the course that its own numbers must back.

``course_checks.claim`` is silent when a claim holds, does nothing in test
mode, prints a note for a learner, and raises inside ``make notebooks``. The
last test builds and runs a tiny notebook through tools/make_notebooks.py in a
real kernel and shows that a false claim fails the build.
"""
from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pytest

from test_notebooks_meta import ROOT, checks, mk  # the generator and course_checks, loaded once

SENTENCE = "the two outputs match within bf16 tolerance"


@pytest.fixture
def build_env(monkeypatch):
    """The environment make_notebooks gives the kernel: claims enforced, not test mode."""
    monkeypatch.delenv("TLKIT_FAST", raising=False)
    monkeypatch.setenv("TLKIT_CLAIMS", "1")


def test_a_true_claim_passes_silently(build_env, capsys):
    assert checks.claim(0.001 < 0.01, SENTENCE, max_diff=0.001) is None
    assert capsys.readouterr().out == ""


def test_a_false_claim_raises_with_the_sentence_and_the_numbers(build_env):
    with pytest.raises(checks.ClaimError) as err:
        checks.claim(0.2 < 0.01, SENTENCE, max_diff=0.2, tolerance=0.01, per_epoch=[0.53, 0.9])
    text = str(err.value)
    assert SENTENCE in text
    assert "max_diff=0.2" in text and "tolerance=0.01" in text and "per_epoch=[0.53, 0.9]" in text


def test_test_mode_skips_claims(monkeypatch, capsys):
    monkeypatch.setenv("TLKIT_CLAIMS", "1")
    monkeypatch.setenv("TLKIT_FAST", "1")
    checks.claim(False, SENTENCE, max_diff=0.2)  # no error, no note
    assert capsys.readouterr().out == ""
    assert checks.claims_enforced() is False


def test_outside_the_build_a_false_claim_is_a_note_not_an_error(monkeypatch, capsys):
    monkeypatch.delenv("TLKIT_FAST", raising=False)
    monkeypatch.delenv("TLKIT_CLAIMS", raising=False)
    checks.claim(False, SENTENCE, max_diff=0.2)
    out = capsys.readouterr().out
    assert out.startswith("Note:") and SENTENCE in out and "max_diff=0.2" in out


def test_ran_before_reads_the_build_list(monkeypatch):
    monkeypatch.setenv("TLKIT_BUILD_RAN", "01 02 03")
    assert checks.ran_before("02") and not checks.ran_before("04")
    monkeypatch.delenv("TLKIT_BUILD_RAN")
    assert not checks.ran_before("02")  # a learner running one notebook alone


def test_kernel_env_enforces_claims_and_lists_earlier_notebooks(monkeypatch):
    monkeypatch.setenv("TLKIT_FAST", "1")
    env = mk.kernel_env(fast=False, cache_dir="/c", ran=["01", "02"])
    assert env["TLKIT_CLAIMS"] == "1" and "TLKIT_FAST" not in env
    assert env["TLKIT_BUILD_RAN"] == "01 02" and env["TLKIT_CACHE_DIR"] == "/c"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)  # the kernel runs this Python
    assert mk.kernel_env(fast=True)["TLKIT_FAST"] == "1"


def test_kernel_env_drops_a_non_inline_matplotlib_backend(monkeypatch):
    # MPLBACKEND=Agg in the build's shell reached the kernel and left notebook 06 without figures.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    assert "MPLBACKEND" not in mk.kernel_env(fast=False)


def test_claim_marker_makes_a_collapsed_tagged_cell(tmp_path):
    src = tmp_path / "99_tiny.py"
    src.write_text("# %% [markdown]\n# Two is more than one.\n\n# %% claim\n"
                   "# Claim check: guards the sentence above\nclaim(2 > 1, 'two is more')\n", encoding="utf-8")
    cell = mk.build_notebook(src).cells[1]
    assert cell.cell_type == "code" and cell.source.startswith("# Claim check")
    assert cell.metadata["tags"] == ["claim-check"] and cell.metadata["jupyter"]["source_hidden"] is True
    with pytest.raises(ValueError, match="# Claim check"):
        mk.parse_percent("# %% claim\nclaim(True, 'x')\n")  # must say what it is


TINY = """# a tiny course notebook
# %% [markdown]
# The largest difference is below 0.01.

# %%
max_diff = {diff}
print("largest difference:", max_diff)

# %% claim
# Claim check: guards the sentence above; runs when the notebooks are rebuilt
from course_checks import claim

claim(max_diff < 0.01, "The largest difference is below 0.01.", max_diff=max_diff, tolerance=0.01)
"""


@pytest.fixture
def tiny_build(tmp_path, monkeypatch):
    """A notebooks/ folder in tmp_path holding course_checks.py, and a writer of tiny sources."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(ROOT / "notebooks" / "course_checks.py", folder)
    monkeypatch.setattr(mk, "NOTEBOOKS", folder)  # the kernel runs there and the notebook is written there
    monkeypatch.delenv("TLKIT_FAST", raising=False)

    def source(diff: float) -> Path:
        src = tmp_path / f"99_tiny_{str(diff).replace('.', '_')}.py"
        src.write_text(TINY.format(diff=diff), encoding="utf-8")
        return src
    return folder, source


def test_the_build_fails_on_a_false_claim_and_passes_a_true_one(tiny_build):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    folder, source = tiny_build
    bad = source(0.2)
    with pytest.raises(SystemExit) as err:
        mk.make(bad, fast=False, run=True)
    text = str(err.value)
    assert "ClaimError" in text and "The largest difference is below 0.01." in text
    assert "max_diff=0.2" in text and bad.name in text
    assert not (folder / f"{bad.stem}.ipynb").exists()  # nothing written for a failed notebook

    good = source(0.001)
    mk.make(good, fast=False, run=True)
    written = mk.nbformat.read(folder / f"{good.stem}.ipynb", as_version=4)
    claim_cell = written.cells[-1]
    assert claim_cell.metadata["tags"] == ["claim-check"] and claim_cell.outputs == []  # silent when it holds
    assert "largest difference: 0.001" in written.cells[1].outputs[0].text


# --------------------------------------------------------------------------
# The exercise checkers: the reference is computed inside course_checks, a right answer
# passes ("Correct:") and a wrong one gets "Not yet:" (nothing raises).

def _say(fn, *args, **kwargs) -> str:
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert fn(*args, **kwargs) is None
    return buf.getvalue()


def test_check_trainable_after_counts_a_fresh_model():
    # efficientnet_lite0: stage8 has 412,160 parameters; a 3-class head 1280 x 3 + 3.
    assert checks.trainable_after(["stage8", "head"], num_classes=3) == 412_160 + 3843
    assert _say(checks.check_trainable_after, 416_003, ["stage8", "head"], num_classes=3).startswith("Correct:")
    assert "head's weights" in _say(checks.check_trainable_after, 412_160, ["stage8", "head"], num_classes=3)
    assert "head alone" in _say(checks.check_trainable_after, 3843, ["stage8", "head"], num_classes=3)
    assert _say(checks.check_trainable_after, 2562, ["stage8", "head"], num_classes=3).startswith("Not yet:")
    assert "replace the None" in _say(checks.check_trainable_after, None, ["head"])


def test_check_spatial_size_measures_the_network():
    assert checks.last_feature_size(384) == 12 and checks.last_feature_size(224) == 7
    assert _say(checks.check_spatial_size, 12, 384).startswith("Correct: 384 px / 32 = 12")
    assert "input size" in _say(checks.check_spatial_size, 384, 384)
    assert "same factor" in _say(checks.check_spatial_size, 7, 384)


def test_check_fixed_recipe_needs_both_bugs_fixed():
    from tlkit import freeze, load_backbone
    from tlkit.data import transforms_for

    lite0 = load_backbone("efficientnet_lite0", pretrained=False)
    other = load_backbone("resnet18", pretrained=False)
    other.replace_head(2)
    freeze(other, other.group_names)  # the bug: the head is frozen too
    assert "none at all" in _say(checks.check_fixed_recipe, other, transforms_for(other))
    freeze(other, other.group_names[:-1])
    other.groups["head"].requires_grad_(True)
    other.frozen_groups.discard("head")
    assert "Whose statistics" in _say(checks.check_fixed_recipe, other, transforms_for(lite0))
    assert _say(checks.check_fixed_recipe, other, transforms_for(other)).startswith("Correct: resnet18")


def test_check_cache_megabytes():
    assert _say(checks.check_cache_megabytes, 10.24, 2000, 1280).startswith("Correct:")
    assert "float32" in _say(checks.check_cache_megabytes, 5.12, 2000, 1280)
    assert "megabytes" in _say(checks.check_cache_megabytes, 10_240_000, 2000, 1280)
    assert _say(checks.check_cache_megabytes, 60, 2000, 1280).startswith("Not yet:")


def test_check_lr_results_trains_its_own_reference():
    import torch

    from tlkit.features import Features

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 2
    x = torch.randn(40, 8, generator=g) + labels[:, None] * 3.0
    feats = Features(x, labels, [f"f{i}" for i in range(40)], ["a", "b"])
    ref = checks.lr_reference(feats, feats, (1e-3, 1e-1), epochs=3)
    assert set(ref) == {1e-3, 1e-1}
    assert _say(checks.check_lr_results, dict(ref), feats, feats, (1e-3, 1e-1), epochs=3).startswith("Correct:")
    wrong = {lr: 1.0 - acc if acc < 0.9 else 0.0 for lr, acc in ref.items()}  # far from every reference value
    assert "expected about" in _say(checks.check_lr_results, wrong, feats, feats, (1e-3, 1e-1), epochs=3)
    assert "missing" in _say(checks.check_lr_results, {1e-3: 0.5}, feats, feats, (1e-3, 1e-1), epochs=3)


def test_check_layer_rate_is_log_even():
    rate = checks.layer_rate("stage7", (1e-5, 1e-3))
    assert rate == pytest.approx(1e-5 * 100 ** (7 / 9), rel=1e-6)  # stem .. head: 10 groups, 9 steps; stage7 is 7 up
    assert _say(checks.check_layer_rate, 3.59e-4).startswith("Correct:")
    assert _say(checks.check_layer_rate, 1e-3 * 8 / 9).startswith("Not yet:")  # a linear spread
    assert _say(checks.check_layer_rate, 1e-5).startswith("Not yet:")


def test_check_bn_train_count_counts_only_trainable_groups():
    from torch import nn

    from tlkit import load_backbone

    n = checks.bn_in_train_mode(-3)
    model = load_backbone("efficientnet_lite0", pretrained=False, num_classes=2)
    top = sum(isinstance(m, nn.BatchNorm2d) for g in ("stage7", "stage8") for m in model.groups[g].modules())
    everything = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n == top and 0 < n < everything
    assert _say(checks.check_bn_train_count, n, k=-3).startswith("Correct:")
    assert "too many" in _say(checks.check_bn_train_count, everything, k=-3)
    assert "too few" in _say(checks.check_bn_train_count, 0, k=-3)


def test_check_finetune_bug():
    assert _say(checks.check_finetune_bug, "b").startswith("Correct:")
    assert _say(checks.check_finetune_bug, "D").startswith("Not yet:")
    assert "one letter" in _say(checks.check_finetune_bug, "line 2")


def test_check_beats_baseline_needs_the_intervals_apart():
    from tlkit.history import History

    def hist(acc):
        return History([{"epoch": 1, "val_acc": acc, "val_loss": 0.3}])

    assert checks.wilson(0.9, 500)[0] == pytest.approx(0.871, abs=1e-3)
    assert _say(checks.check_beats_baseline, hist(0.95), 0.89, 500).startswith("Correct:")
    assert "a tie" in _say(checks.check_beats_baseline, hist(0.90), 0.89, 500)
    assert _say(checks.check_beats_baseline, hist(0.85), 0.89, 500).startswith("Not yet:")
    assert "History" in _say(checks.check_beats_baseline, 0.95, 0.89, 500)


def test_check_val_size():
    assert _say(checks.check_val_size, 3458, accuracy=0.9, half_width=0.01).startswith("Correct:")
    assert "1.96" in _say(checks.check_val_size, 900, accuracy=0.9, half_width=0.01)
    assert _say(checks.check_val_size, 500, accuracy=0.9, half_width=0.01).startswith("Not yet:")


def test_check_choice_with_a_minimum_top1():
    table = [dict(backbone="a", params_M=3.0, img_per_s=300.0, top1=70.0),
             dict(backbone="b", params_M=5.0, img_per_s=200.0, top1=76.0),
             dict(backbone="c", params_M=25.0, img_per_s=500.0, top1=80.0)]
    assert _say(checks.check_choice, "b", table, max_params_m=6.0, min_top1=75.0).startswith("Correct:")
    assert "top-1" in _say(checks.check_choice, "a", table, max_params_m=6.0, min_top1=75.0)
    assert "budget" in _say(checks.check_choice, "c", table, max_params_m=6.0, min_top1=75.0)


def test_check_unfreeze_budget():
    # From the head down: head 2,562 + stage8 412,160 + stage7 605,440 = 1,020,162 >= 1,000,000.
    assert _say(checks.check_unfreeze_budget, ["stage7", "stage8", "head"]).startswith("Correct:")
    assert "Unfreeze one more" in _say(checks.check_unfreeze_budget, ["stage8", "head"])
    assert "fewer groups" in _say(checks.check_unfreeze_budget, ["stage6", "stage7", "stage8", "head"])
    assert "contiguous" in _say(checks.check_unfreeze_budget, ["stage6", "head"])
    assert "unknown" in _say(checks.check_unfreeze_budget, ["layer4", "head"])


# notebook 08: to the edge

def test_check_device_choice_takes_the_most_accurate_within_the_latency_budget():
    table = [dict(model="small", accuracy=0.97, ms=10.0), dict(model="mid", accuracy=0.98, ms=18.0),
             dict(model="big", accuracy=0.99, ms=35.0)]
    assert checks.device_choice(table, max_slowdown=2.0) == "mid"
    assert _say(checks.check_device_choice, "mid", table).startswith("Correct:")
    assert "too slow" in _say(checks.check_device_choice, "big", table)
    assert "also fits" in _say(checks.check_device_choice, "small", table)
    assert "choose one of" in _say(checks.check_device_choice, "huge", table)
    tie = [dict(model="a", accuracy=0.98, ms=10.0), dict(model="b", accuracy=0.98, ms=12.0)]
    assert checks.device_choice(tie) == "a"  # equal accuracy: the faster one


def test_check_soft_target_against_a_hand_computation():
    # softmax((2, -1) / 4)[0] = 1 / (1 + e^-0.75)
    assert checks.soft_target((2.0, -1.0), 4.0) == pytest.approx(1 / (1 + math.exp(-0.75)))
    assert _say(checks.check_soft_target, 0.679).startswith("Correct:")
    assert "T = 1" in _say(checks.check_soft_target, 0.953)
    assert "Not yet" in _say(checks.check_soft_target, 0.5)


def test_check_int8_megabytes():
    assert checks.int8_megabytes(6_000_000) == 6.0
    assert _say(checks.check_int8_megabytes, 6.5, 6_000_000).startswith("Correct:")
    assert "fp32" in _say(checks.check_int8_megabytes, 24.0, 6_000_000)
    assert "Not yet" in _say(checks.check_int8_megabytes, 2.0, 6_000_000)
