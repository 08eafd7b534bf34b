"""Distillation into the student's body (``distill(..., train_body=True)``), with tiny models, offline."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from imagegen import make_split  # noqa: E402
from test_export import CLASSES, _model  # noqa: E402
from tlkit import freeze_to  # noqa: E402
from tlkit.data import scan_class_folders, transforms_for  # noqa: E402
from tlkit.export import distill, teacher_logits  # noqa: E402
from tlkit.features import extract_features, train_head  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def setup(tmp_path):
    """A teacher whose head learnt the labels (so its soft targets carry a signal), a student, the data."""
    teacher, student = _model("mobilenet_v3_small", seed=4), _model("resnet18", seed=5)
    train = scan_class_folders(make_split(tmp_path / "train", per_class=6, size=48), classes=CLASSES)
    tf = extract_features(teacher, train.with_transform(transforms_for(teacher, image_size=64)), cache=False,
                          progress=False)
    teacher.groups["head"].load_state_dict(train_head(tf, epochs=60, lr=3e-2)[0].state_dict())
    return teacher, student, train, tmp_path / "cache"


def _teacher_calls(teacher) -> list[int]:
    calls: list[int] = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_body_distillation_trains_the_unfrozen_groups_towards_the_teacher(setup):
    teacher, student, train, cache = setup
    freeze_to(student, -2)  # stage4 and the head train; stem..stage3 stay as they are
    frozen = {k: v.clone() for k, v in student.state_dict().items() if k.startswith(("groups.stem", "groups.stage1"))}
    stage4 = {k: v.clone() for k, v in student.groups["stage4"].state_dict().items()}
    calls = _teacher_calls(teacher)
    out, history = distill(teacher, student, train, temperature=2.0, alpha=1.0, epochs=25, lr=3e-3, batch_size=6,
                           teacher_size=64, student_size=48, cache_dir=cache, train_body=True)
    assert out is student and [r["epoch"] for r in history.rows] == list(range(1, 26))
    ran = len(calls)
    assert ran >= 1  # the teacher ran over the 12 images once, then its cached logits were used
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in frozen.items())  # frozen groups untouched
    assert any(not torch.equal(v, student.groups["stage4"].state_dict()[k]) for k, v in stage4.items())
    assert history.rows[-1]["train_loss"] < 0.5 * history.rows[0]["train_loss"]
    # alpha=1: the student learnt the teacher's soft targets, so it makes the teacher's choices
    t = teacher_logits(teacher, train, image_size=64, cache_dir=cache)
    assert t.from_cache and len(calls) == ran and len(set(t.features.argmax(1).tolist())) == 2
    x = torch.stack([transforms_for(student, image_size=48)(__import__("PIL.Image").Image.open(f).convert("RGB"))
                     for f in t.files])
    with torch.no_grad():
        agree = (student.eval()(x).argmax(1) == t.features.argmax(1)).float().mean().item()
    assert agree >= 0.9


def test_body_distillation_keeps_the_best_validation_epoch_and_a_second_run_reuses_the_teacher(setup, tmp_path):
    teacher, student, train, cache = setup
    val = scan_class_folders(make_split(tmp_path / "val", per_class=3, size=48, seed=3), classes=CLASSES)
    freeze_to(student, -2)
    distill(teacher, student, train, epochs=1, teacher_size=64, student_size=48, cache_dir=cache, train_body=True)
    calls = _teacher_calls(teacher)
    _, hist = distill(teacher, student, train, val=val, alpha=0.0, epochs=3, batch_size=4, teacher_size=64,
                      student_size=48, cache_dir=cache, train_body=True)
    assert not calls  # the teacher's logits came from the cache
    accs = [r["val_acc"] for r in hist.rows]
    assert len(accs) == 3 and all(abs(a * 6 - round(a * 6)) < 1e-9 for a in accs)  # 6 validation images
    from tlkit.export.distill_body import accuracy
    assert accuracy(student, val.with_transform(transforms_for(student, image_size=48))) == pytest.approx(max(accs))


def test_body_distillation_refuses_a_fully_frozen_student(setup):
    teacher, student, train, cache = setup
    freeze_to(student, len(student.group_names))
    with pytest.raises(ValueError, match="freeze_to"):
        distill(teacher, student, train, epochs=1, teacher_size=64, student_size=48, cache_dir=cache,
                train_body=True)
