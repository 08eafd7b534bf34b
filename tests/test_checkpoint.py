"""Model files: round trip, mismatches named, atomic writes."""
import pytest
import torch

from tlkit import freeze, load_backbone
from tlkit.checkpoint import load_head, load_model, save_model
from tlkit.errors import CheckpointError


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = load_backbone("resnet18", pretrained=False, num_classes=3, class_names=["a", "b", "c"])
    m.replace_head(3, hidden=(8,), dropout=0.2, class_names=["a", "b", "c"])
    freeze(m, ["stem"])
    return m.eval()


def test_round_trip_gives_the_same_predictions(model, tmp_path):
    path = save_model(model, tmp_path / "m.pt", image_size=96, val_accuracy=0.5)
    blob = torch.load(path, weights_only=True)
    assert blob["backbone"] == "resnet18" and blob["class_names"] == ["a", "b", "c"]
    assert blob["image_size"] == 96 and blob["extra"] == {"val_accuracy": 0.5}
    loaded = load_model(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.input_size == 96 and loaded.class_names == ["a", "b", "c"]


def test_mismatches_name_both_sides(model, tmp_path):
    path = save_model(model, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"'resnet18'.*'efficientnet_lite0'"):
        load_model(path, expect_backbone="efficientnet_lite0")
    with pytest.raises(CheckpointError, match=r"\['a', 'b', 'c'\] \(3\).*\['cats', 'dogs'\] \(2\)"):
        load_model(path, expect_classes=["cats", "dogs"])


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a tlkit model file"):
        load_model(tmp_path / "other.pt")


def test_a_failed_write_leaves_the_old_file_intact(model, tmp_path, monkeypatch):
    path = save_model(model, tmp_path / "m.pt")
    original = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_load_head_takes_the_head_of_a_model_file(model, tmp_path):
    path = save_model(model, tmp_path / "m.pt")
    fresh = load_backbone("resnet18", pretrained=False)
    fresh.replace_head(3, hidden=(8,), dropout=0.2)
    load_head(fresh, path)
    for k, v in model.head.state_dict().items():
        assert torch.equal(fresh.head.state_dict()[k], v)
    assert not torch.equal(fresh.groups["stem"][0].weight, model.groups["stem"][0].weight)  # the body is untouched


def test_load_head_of_another_shape_names_the_tensors_and_the_fix(model):
    wrong = torch.nn.Sequential(torch.nn.Linear(512, 2))
    before = {k: v.clone() for k, v in model.head.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"does not fit.*replace_head"):
        load_head(model, wrong)
    assert all(torch.equal(v, model.head.state_dict()[k]) for k, v in before.items())
    with pytest.raises(CheckpointError, match="holds no head weights"):
        load_head(model, {"0.weight": [1, 2]})
    with pytest.raises(TypeError, match="state dict or a file path"):
        load_head(model, 3)
