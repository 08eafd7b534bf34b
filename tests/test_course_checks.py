"""Claim checks: the sentences of the course that its own numbers must back.

``course_checks.claim`` is silent when a claim holds, does nothing in test
mode, prints a note for a learner, and raises inside ``make notebooks``. The
last test builds and runs a tiny notebook through tools/make_notebooks.py in a
real kernel and shows that a false claim fails the build.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


mk = _load("make_notebooks", ROOT / "tools" / "make_notebooks.py")
checks = _load("course_checks", ROOT / "notebooks" / "course_checks.py")

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
