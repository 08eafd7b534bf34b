"""Predictions, confusion matrix, top losses, evaluate_split (one-photo tests: test_explain.py)."""
import math

import pytest
import torch

from tlkit.data import ImageDataset, transforms_for
from tlkit.errors import DatasetLayoutError
from tlkit.evaluate import (Predictions, confusion_matrix, evaluate_split, predict, predictions_from_features,
                            top_losses)
from tlkit.features import extract_features

from imagegen import noisy_split

CLASSES = ["cats", "dogs"]


def _modes(model):
    return [m.training for m in model.modules()]


# ---------------------------------------------------------------- metrics

def test_confusion_matrix_counts_rows_true_cols_pred():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], torch.tensor([0, 1, 1, 2, 0, 2]), 3)
    assert cm.dtype == torch.long
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError, match="0..1"):
        confusion_matrix([0, 2], [0, 1], 2)


def _preds() -> Predictions:
    probs = torch.tensor([[0.9, 0.1],    # true 0, right
                          [0.2, 0.8],    # true 0, wrong (p_true 0.2)
                          [0.01, 0.99],  # true 1, right
                          [0.95, 0.05],  # true 1, wrong and confident (p_true 0.05)
                          [0.6, 0.4]])   # true 1, wrong (p_true 0.4)
    return Predictions(probs, torch.tensor([0, 0, 1, 1, 1]), [f"f{i}.jpg" for i in range(5)], CLASSES)


def test_predictions_properties():
    p = _preds()
    assert p.preds.tolist() == [0, 1, 1, 0, 0]
    assert p.accuracy == pytest.approx(2 / 5)
    assert len(p) == 5
    empty = Predictions(torch.empty(0, 2), torch.empty(0, dtype=torch.long), [], CLASSES)
    assert math.isnan(empty.accuracy) and empty.preds.shape == (0,)


def test_top_losses_most_confident_mistakes_first():
    rows = top_losses(_preds(), k=3)
    assert [r["index"] for r in rows] == [3, 1, 4]
    assert [r["file"] for r in rows] == ["f3.jpg", "f1.jpg", "f4.jpg"]
    assert rows[0]["label"] == "dogs" and rows[0]["pred"] == "cats"
    assert rows[0]["prob"] == pytest.approx(0.95)
    assert rows[0]["loss"] == pytest.approx(-math.log(0.05), rel=1e-5)
    assert [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
    assert len(top_losses(_preds(), k=50)) == 5  # k larger than N: every image once
    with pytest.raises(ValueError):
        top_losses(_preds(), k=0)


# ---------------------------------------------------------------- predict

def test_predict_shapes_probabilities_and_mode(lite0_64, noisy_val):
    lite0_64.train()
    modes = _modes(lite0_64)
    p = predict(lite0_64, noisy_val, batch_size=4, device="cpu")  # dataset has no transform: transforms_for
    assert p.probs.shape == (6, 2) and p.labels.tolist() == noisy_val.targets
    assert torch.allclose(p.probs.sum(1), torch.ones(6), atol=1e-5)
    assert p.files == noisy_val.files and p.classes == CLASSES
    assert 0.0 <= p.accuracy <= 1.0
    assert _modes(lite0_64) == modes  # train mode (with its BN policy) restored


def test_predict_skips_unreadable_images(lite0_64, noisy_val, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    ds = ImageDataset([*noisy_val.files[:2], str(bad), noisy_val.files[3]], [0, 0, 0, 1], CLASSES)
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        p = predict(lite0_64, ds, batch_size=2, device="cpu")
    assert p.files == [noisy_val.files[0], noisy_val.files[1], noisy_val.files[3]]
    assert p.labels.tolist() == [0, 0, 1] and p.probs.shape == (3, 2)


def test_predictions_from_features_equal_predict(lite0_64, noisy_val):
    ds = noisy_val.with_transform(transforms_for(lite0_64))
    direct = predict(lite0_64, ds, batch_size=4, device="cpu")
    feats = extract_features(lite0_64, ds, batch_size=4, device="cpu", cache=False, progress=False, precision="fp32")
    cached = predictions_from_features(lite0_64.head, feats)
    assert torch.allclose(cached.probs, direct.probs, atol=1e-5)
    assert cached.files == direct.files and torch.equal(cached.labels, direct.labels)
    assert torch.allclose(predictions_from_features(lite0_64, feats).probs, direct.probs, atol=1e-5)
    feats.classes = ["a", "b", "c"]
    with pytest.raises(ValueError, match="3 classes"):
        predictions_from_features(lite0_64.head, feats)


# ---------------------------------------------------------------- evaluate_split

def test_evaluate_split_reports_accuracy_and_confusion(lite0_64, tmp_path):
    root = noisy_split(tmp_path / "val", per_class=2)
    result = evaluate_split(lite0_64, root, device="cpu")
    assert result["n"] == 4 and result["classes"] == CLASSES
    assert sum(map(sum, result["confusion"])) == 4 and set(result["per_class"]) == set(CLASSES)
    diag = result["confusion"][0][0] + result["confusion"][1][1]
    assert result["accuracy"] == pytest.approx(diag / 4)


def test_evaluate_split_names_both_class_lists(lite0_64, tmp_path):
    root = noisy_split(tmp_path / "val", classes=("cats", "birds"), per_class=1)
    with pytest.raises(DatasetLayoutError, match=r"\['birds', 'cats'\].*\['cats', 'dogs'\]"):
        evaluate_split(lite0_64, root)
    lite0_64.class_names = None
    with pytest.raises(ValueError, match="class_names"):
        evaluate_split(lite0_64, root)


# ---------------------------------------------------------------- intervals

def test_binomial_interval_wilson_values_and_errors():
    from tlkit.evaluate import binomial_interval
    low, high = binomial_interval(0.9, 400)
    assert (round(low, 3), round(high, 3)) == (0.867, 0.926)
    assert binomial_interval(1.0, 40)[1] == 1.0 and binomial_interval(1.0, 40)[0] < 0.92  # never zero width
    assert binomial_interval(0.9, 1000)[1] - binomial_interval(0.9, 1000)[0] < high - low  # more photos: narrower
    with pytest.raises(ValueError, match="n must"):
        binomial_interval(0.5, 0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        binomial_interval(87.5, 40)


def test_compare_accuracies_calls_a_tie_a_tie():
    from tlkit.evaluate import compare_accuracies, difference_interval
    assert compare_accuracies(0.875, 0.85, 40) == "tie"       # the board's old "best" on 40 photos
    assert compare_accuracies(0.925, 0.855, 400) == "a"
    assert compare_accuracies(0.855, 0.925, 400) == "b"
    low, high = difference_interval(0.925, 0.855, 400)
    assert low > 0 and math.isclose((low + high) / 2, 0.07)
