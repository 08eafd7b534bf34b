"""The course notebooks: structure, freshness and the exercise checks.

nbval runs the notebooks themselves (``pytest --nbval-lax notebooks/`` with
``TLKIT_FAST=1``). These tests check what nbval cannot: every committed
notebook matches its source script, opens with badges pointing at itself and
a setup cell, has at least 3 exercises with checks and hidden solutions
(committed without outputs), carries NBVAL_CHECK_OUTPUT markers, and shows no
path of the machine that built it.
They read files only and run in well under a second each, except one that
starts a kernel to check that the generator saves the widgets' state.
"""
from __future__ import annotations

import importlib.util
import io
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = ["01_what_transfer_learning_is", "02_dog_vs_cat_classifier", "03_feature_extraction_vs_fine_tuning",
            "04_overfitting", "05_live_lab", "06_when_the_data_shifts", "07_transfer_learning_for_text",
            "08_to_the_edge"]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


mk = _load("make_notebooks", ROOT / "tools" / "make_notebooks.py")
checks = _load("course_checks", NOTEBOOKS / "course_checks.py")


def _committed(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_five_notebooks_and_their_sources_exist():
    assert [p.stem for p in mk.source_files()] == EXPECTED
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_is_up_to_date_with_its_source(name):
    built = mk.build_notebook(mk.SOURCES / f"{name}.py")
    assert mk.cell_sources(_committed(name)) == mk.cell_sources(built), (
        f"notebooks/{name}.ipynb is stale: run `make notebooks` (or tools/make_notebooks.py --only {name[:2]})")


def _shows_a_figure(source: str) -> bool:
    """Whether a cell ends with an expression that is a figure: ``viz.plot_*(...)``, ``viz.show_*(...)`` or ``fig``."""
    import ast

    try:
        body = ast.parse("\n".join(l for l in source.splitlines() if not l.lstrip().startswith(("%", "!")))).body
    except SyntaxError:
        return False
    if not body or not isinstance(body[-1], ast.Expr) or source.rstrip().endswith(";"):
        return False
    value = body[-1].value
    if isinstance(value, ast.Name):
        return value.id in {"fig", "figure"}
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
        owner = value.func.value
        return (isinstance(owner, ast.Name) and owner.id == "viz"
                and value.func.attr.startswith(("plot_", "show_")))
    return False


def test_shows_a_figure_reads_the_last_expression():
    assert _shows_a_figure("x = 1\nviz.plot_bar(rows, 'a', 'b')")
    assert _shows_a_figure("fig = viz.plot_bar(rows)\nfig")
    assert not _shows_a_figure("viz.show_images(items);")      # the semicolon hides the figure
    assert not _shows_a_figure("fig = viz.plot_bar(rows)")
    assert not _shows_a_figure("print(viz.plot_bar)")


@pytest.mark.parametrize("name", EXPECTED)
def test_every_figure_cell_has_its_picture_committed(name):
    """A cell that ends with a figure shows it: the build must not run with a non-inline backend."""
    cells = [c for c in _code(_committed(name))
             if _shows_a_figure(c.source) and "solution" not in c.metadata.get("tags", [])]
    missing = [c.source.splitlines()[-1][:60] for c in cells
               if not any({"image/png", "image/jpeg"} & set(o.get("data", {})) for o in c.outputs)]
    assert not missing, f"{name}: figure cells without a picture: {missing}"


@pytest.mark.parametrize("name", EXPECTED)
def test_opens_with_badges_pointing_at_itself_objectives_and_run_time(name):
    first = _committed(name).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    colab = f"https://colab.research.google.com/github/tlkit-course/tlkit/blob/main/notebooks/{name}.ipynb"
    binder = f"https://mybinder.org/v2/gh/tlkit-course/tlkit/main?urlpath=lab/tree/notebooks/{name}.ipynb"
    assert f"({colab})" in first.source and f"({binder})" in first.source
    assert "You will learn" in first.source
    assert re.search(r"\*\*(Run time|Expected results?)", first.source)
    assert "EXPECTED_0" not in first.source, "fill in the measured expected result"


@pytest.mark.parametrize("name", EXPECTED)
def test_first_code_cell_is_the_setup_cell(name):
    nb = _committed(name)
    setup = _code(nb)[0].source
    assert 'if "google.colab" in sys.modules:' in setup
    assert "tlkit[widgets,text,export]" in setup and '"clone"' in setup and "https://github.com/tlkit-course/tlkit" in setup
    # Everything that acts is inside the Colab branch: elsewhere the cell does nothing.
    outside = [ln for ln in setup.splitlines() if ln and not ln.startswith((" ", "#", "import sys", "if "))]
    assert outside == []
    assert "enable_custom_widget_manager" not in setup
    # The same setup cell in every notebook.
    assert setup == _code(_committed(EXPECTED[0]))[0].source


@pytest.mark.parametrize("name", EXPECTED)
def test_profile_cell_chooses_cpu_gpu_or_test_mode(name):
    profile = _code(_committed(name))[1]
    for needle in ('os.environ.get("TLKIT_FAST") == "1"', "torch.cuda.is_available()", '"cpu":', '"gpu":',
                   '"test":', 'print(f"profile: {PROFILE}'):
        assert needle in profile.source
    text = "".join(o.get("text", "") for o in profile.outputs)
    assert text.startswith("profile: cpu"), "the committed notebooks are executed in the cpu profile"


@pytest.mark.parametrize("name", EXPECTED)
def test_at_least_three_exercises_each_with_a_check_and_a_hidden_solution(name):
    cells = mk.build_notebook(mk.SOURCES / f"{name}.py").cells
    starts = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and "### Exercise" in c.source]
    assert len(starts) >= 3
    for i in starts:
        task, solution = cells[i + 1], cells[i + 2]
        used = re.findall(r"\b(check_\w+)\(", task.source)
        assert used and all(callable(getattr(checks, f, None)) for f in used), task.source
        assert solution.cell_type == "code" and solution.metadata["jupyter"]["source_hidden"] is True
        assert "solution" in solution.metadata["tags"]
        assert used[0] in solution.source


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_solution_cells_have_no_outputs(name):
    solutions = [c for c in _code(_committed(name)) if mk.is_solution(c)]
    assert len(solutions) >= 3
    shown = [c.id for c in solutions if c.outputs]
    assert not shown, f"solution cells {shown} show their answer on GitHub: rebuild with tools/make_notebooks.py"


def test_build_strips_solution_outputs_and_catches_failing_solutions():
    nb = mk.build_notebook(mk.SOURCES / "01_what_transfer_learning_is.py")
    solutions = [c for c in nb.cells if mk.is_solution(c)]
    assert solutions
    for cell in solutions:
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="Correct: well done\n")]
    exercise = next(c for c in nb.cells if c.cell_type == "code" and not mk.is_solution(c))
    exercise.outputs = [nbformat.v4.new_output("stream", name="stdout", text="Not yet: try again\n")]
    assert mk.failing_solutions(nb) == []
    solutions[0].outputs[0].text = "Not yet: the solution is broken\n"
    assert mk.failing_solutions(nb) == [solutions[0].id]
    assert mk.strip_solution_outputs(nb) == len(solutions)
    assert all(c.outputs == [] for c in solutions)
    assert exercise.outputs[0].text == "Not yet: try again\n"  # other cells keep theirs


@pytest.mark.parametrize("name", EXPECTED)
def test_nbval_check_output_cells_are_deterministic_ones(name):
    marked = [c for c in _code(_committed(name)) if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert marked
    for cell in marked:
        assert cell.outputs, "a checked cell must have output to compare"
        for word in ("perf_counter", "SHOW_PROGRESS", "PROFILE", "SETTINGS", "FAST"):
            assert word not in cell.source, f"{word} makes the output depend on the profile or the clock"


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_outputs_are_clean(name):
    nb = _committed(name)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert mk.find_machine_paths(nb) == []
    for cell in _code(nb):
        assert cell.execution_count is not None, "every code cell was executed"
        assert "execution" not in cell.metadata
        assert not [o for o in cell.outputs if o.output_type == "error"]


# --------------------------------------------------------------------------
# The generator

def test_parse_percent_cells_and_solution_marker():
    cells = mk.parse_percent("header comment\n# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\n"
                             "# %% solution\nx = 2\n")
    assert cells == [{"kind": "markdown", "source": "# Title\n\ntext", "hidden": False},
                     {"kind": "code", "source": "x = 1", "hidden": False},
                     {"kind": "code", "source": "x = 2", "hidden": True}]
    with pytest.raises(ValueError, match="solution"):
        mk.parse_percent("# %% hidden\nx = 1\n")
    with pytest.raises(ValueError, match="Markdown lines"):
        mk.parse_percent("# %% [markdown]\nnot a comment\n")


def test_setup_and_profile_cells_come_from_the_generator_template():
    cells = mk.parse_percent("# %% setup\n# %% profile\nSETTINGS = {'cpu': 1}[PROFILE]\n")
    assert cells[0]["source"] == mk.SETUP_CELL
    assert cells[1]["source"] == mk.PROFILE_PREAMBLE + "SETTINGS = {'cpu': 1}[PROFILE]"
    with pytest.raises(ValueError, match="leave it empty"):
        mk.parse_percent("# %% setup\nimport sys\n")


@pytest.mark.parametrize("name", EXPECTED)
def test_sources_are_valid_python_and_use_the_shared_cells(name):
    text = (mk.SOURCES / f"{name}.py").read_text()
    compile(text, name, "exec")  # no bare %config or other magics in the sources
    assert text.count("# %% setup\n") == 1 and text.count("# %% profile\n") == 1
    assert "google.colab" not in text and "%config" not in text  # only in the template


def test_cell_ids_do_not_change_when_a_cell_is_inserted(tmp_path):
    src = tmp_path / "09_x.py"
    src.write_text("# %%\nx = 1\n# %%\ny = 2\n# %%\ny = 2\n")
    before = [c.id for c in mk.build_notebook(src).cells]
    src.write_text("# %% [markdown]\n# new\n# %%\nx = 1\n# %%\nz = 0\n# %%\ny = 2\n# %%\ny = 2\n")
    after = [c.id for c in mk.build_notebook(src).cells]
    assert len(set(before)) == 3 and before[2] == before[1] + "-2"  # a repeated cell gets its own id
    assert [after[1], after[3], after[4]] == before


def test_machine_paths_are_scrubbed_and_leftovers_found():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="/data/x/cats/cat.1.jpg and /srv/a/b.py\n")]
    cell.metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00Z"}
    nb.cells.append(cell)
    mk.scrub_outputs(nb, [("/data/x", "$TLKIT_DATA_DIR")])
    assert cell.outputs[0].text.startswith("$TLKIT_DATA_DIR/cats/cat.1.jpg")
    assert "execution" not in cell.metadata
    leaks = mk.find_machine_paths(nb)
    assert len(leaks) == 1 and "/srv/a/b.py" in leaks[0]
    for ok in ("$TLKIT_DATA_DIR/cats_and_dogs_filtered", "runs/02_dog_vs_cat/model.pt", "~/.cache/tlkit"):
        assert not mk.ABSOLUTE_PATH.search(ok)
    for bad in ("/work/main/x", "/root/.cache", "/tmp/abc", "/home/me/x", "/Users/me/x", "/content/x"):
        assert mk.ABSOLUTE_PATH.search(bad), bad


def _widget_notebook(label: str, buffer: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {mk.WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": {
        "m1": {"model_name": "LabelModel", "state": {"value": label, "layout": "IPY_MODEL_m2"}},
        "m2": {"model_name": "OutputModel", "state": {"outputs": [{"output_type": "stream", "text": [label]}]}},
        "m3": {"model_name": "ImageModel", "state": {"format": "png"},
               "buffers": [{"path": ["value"], "encoding": "base64", "data": buffer}]}}}}
    return nb


def test_widget_state_is_kept_and_its_machine_paths_scrubbed():
    nb = _widget_notebook("saved to /data/x/runs/m.pt", "iVBOR+/tmp/AAA=")
    mk.scrub_outputs(nb, [("/data/x", "$TLKIT_DATA_DIR")])
    models = nb.metadata["widgets"][mk.WIDGET_STATE]["state"]
    assert models["m1"]["state"]["value"] == "saved to $TLKIT_DATA_DIR/runs/m.pt"
    assert models["m2"]["state"]["outputs"][0]["text"] == ["saved to $TLKIT_DATA_DIR/runs/m.pt"]
    assert models["m3"]["buffers"][0]["data"] == "iVBOR+/tmp/AAA="  # pixels, base64: never rewritten or read
    assert mk.find_machine_paths(nb) == []
    leaks = mk.find_machine_paths(_widget_notebook("error in /home/me/photo.jpg", ""))
    assert len(leaks) == 2 and all(x.startswith("widget state:") and "/home/me/photo.jpg" in x for x in leaks)


def test_widget_models_no_output_shows_are_dropped():
    """A redraw's replaced rows and never-displayed panels leave models behind; drawn ones and their links stay."""
    view = "application/vnd.jupyter.widget-view+json"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("panel")
    cell.outputs = [nbformat.v4.new_output("display_data", data={view: {"model_id": "aa", "version_major": 2}}),
                    nbformat.v4.new_output("display_data", data={view: {"model_id": "0e", "version_major": 2}})]
    nb.cells.append(cell)
    nb.metadata["widgets"] = {mk.WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": {
        "aa": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_bb"], "layout": "IPY_MODEL_1a"}},
        "bb": {"model_name": "IntSliderModel", "state": {"value": 7, "layout": "IPY_MODEL_1b"}},
        "1a": {"model_name": "LayoutModel", "state": {}},
        "1b": {"model_name": "LayoutModel", "state": {}},
        "0e": {"model_name": "OutputModel", "state": {"outputs": [{"output_type": "display_data",
                                                               "data": {view: {"model_id": "cc"}}}]}},
        "cc": {"model_name": "LabelModel", "state": {"value": "inside an Output"}},
        "11": {"model_name": "LinkModel",
               "state": {"source": ["IPY_MODEL_bb", "value"], "target": ["IPY_MODEL_cc", "value"]}},
        "dd": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_ee"]}},  # a replaced row
        "ee": {"model_name": "ImageModel", "state": {"format": "png"}},
        "ff": {"model_name": "LinkModel",
               "state": {"source": ["IPY_MODEL_dd", "value"], "target": ["IPY_MODEL_ee", "value"]}},
        "12": {"model_name": "LinkModel",
               "state": {"source": ["IPY_MODEL_bb", "value"], "target": ["IPY_MODEL_ee", "value"]}},
    }}}
    assert mk.drop_unseen_widgets(nb) == 4  # dd, ee, and the links to them
    assert sorted(nb.metadata["widgets"][mk.WIDGET_STATE]["state"]) == ["0e", "11", "1a", "1b", "aa", "bb", "cc"]
    assert mk.drop_unseen_widgets(nb) == 0 and mk.drop_unseen_widgets(nbformat.v4.new_notebook()) == 0


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebooks_save_every_shown_widget_and_nothing_else(name):
    """Each widget an output shows has its saved model (so GitHub and nbviewer can draw it); no other model is kept."""
    nb = _committed(name)
    state = nb.metadata.get("widgets", {}).get(mk.WIDGET_STATE, {}).get("state", {})
    shown = {o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for c in nb.cells
             for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})}
    assert shown <= set(state), f"{name}: widget outputs without a saved model"
    assert mk.drop_unseen_widgets(nb) == 0, f"{name}: saved widget models no output shows"


def test_execute_saves_the_widget_state_and_sends_runs_to_the_given_folder(tmp_path):
    # Starts a real kernel (a few seconds): the state must come from nbclient, not from us.
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": mk.KERNELSPEC})
    nb.cells = [nbformat.v4.new_code_cell("import ipywidgets as w\nw.IntSlider(value=7, description='epochs')"),
                nbformat.v4.new_code_cell("import os\nprint(os.environ['TLKIT_RUNS_DIR'])")]
    mk.execute(nb, fast=True, timeout=120, runs_dir=str(tmp_path / "runs"))
    models = nb.metadata["widgets"][mk.WIDGET_STATE]["state"]
    view = nb.cells[0].outputs[0].data["application/vnd.jupyter.widget-view+json"]
    assert models[view["model_id"]]["state"]["value"] == 7
    assert models[view["model_id"]]["state"]["description"] == "epochs"
    assert nb.cells[1].outputs[0].text.strip() == str(tmp_path / "runs")


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_widgets_have_their_state_saved(name):
    # Every widget a committed notebook shows has its state saved (make notebooks does it), so
    # a front end that trusts the notebook draws the panel instead of "VBox(children=...)" text.
    nb = _committed(name)
    views = [o.data["application/vnd.jupyter.widget-view+json"]["model_id"] for c in _code(nb) for o in c.outputs
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    saved = nb.metadata.get("widgets", {}).get(mk.WIDGET_STATE, {}).get("state", {})
    missing = [v for v in views if v not in saved]
    assert not missing, f"{len(missing)} of {len(views)} widgets have no saved state: run `make notebooks`"


def test_build_without_data_dir_stops_with_a_clear_message(monkeypatch):
    monkeypatch.delenv("TLKIT_DATA_DIR", raising=False)
    with pytest.raises(SystemExit, match="TLKIT_DATA_DIR"):
        mk.check_data()
    monkeypatch.setenv("TLKIT_DATA_DIR", str(ROOT / "no-such-folder"))
    with pytest.raises(SystemExit, match="cats_and_dogs_filtered"):
        mk.check_data()


# --------------------------------------------------------------------------
# The exercise checks: right answers pass, wrong ones say what is wrong

def _say(fn, *args) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert fn(*args) is None
    return buf.getvalue()


def test_check_trainable_count():
    assert _say(checks.check_trainable_count, 2562).startswith("Correct:")
    assert "1000-class" in _say(checks.check_trainable_count, 1_281_000)
    assert "biases" in _say(checks.check_trainable_count, 2560)
    assert "replace the None" in _say(checks.check_trainable_count, None)
    assert "expected a number" in _say(checks.check_trainable_count, "many")


def test_check_zero_shot_recomputes_the_answer():
    import torch

    probs = torch.zeros(4, 1000)
    probs[0, 281] = probs[1, 151] = probs[2, 200] = probs[3, 151] = 1.0  # cat, dog, dog, dog
    labels = torch.tensor([0, 1, 1, 0])
    assert checks.zero_shot_accuracy(probs, labels) == 0.75
    assert _say(checks.check_zero_shot, 0.75, probs, labels).startswith("Correct:")
    assert "wrong way round" in _say(checks.check_zero_shot, 0.25, probs, labels)
    assert "fraction" in _say(checks.check_zero_shot, 75, probs, labels)


def test_check_spatial_size_and_bn_mode():
    assert _say(checks.check_spatial_size, 7, 224).startswith("Correct:")
    assert "input size" in _say(checks.check_spatial_size, 224, 224)
    assert _say(checks.check_bn_mode, "eval").startswith("Correct:")
    assert _say(checks.check_bn_mode, "train").startswith("Not yet:")


def test_check_recipe_partial_and_frozen_except_on_a_real_backbone():
    from tlkit import freeze, freeze_to, load_backbone

    model = load_backbone("resnet18", pretrained=False)
    assert "2" in _say(checks.check_recipe, model)  # 1000 outputs: asks for 2
    model.replace_head(2)
    assert "Freeze all but the head" in _say(checks.check_recipe, model)
    freeze(model, model.group_names[:-1])
    assert _say(checks.check_recipe, model).startswith("Correct: resnet18")
    freeze_to(model, -3)
    assert _say(checks.check_partial, model).startswith("Correct:")
    assert _say(checks.check_frozen_except, model, ["stage3", "stage4", "head"]).startswith("Correct:")
    assert _say(checks.check_frozen_except, model, ["head"]).startswith("Not yet:")
    freeze_to(model, 0)
    assert "everything trains" in _say(checks.check_partial, model)


def test_check_normalisation_reads_the_model():
    class Fake:
        mean, std = (127 / 255,) * 3, (128 / 255,) * 3

    assert _say(checks.check_normalisation, Fake.mean, Fake.std, Fake).startswith("Correct:")
    assert "ImageNet statistics" in _say(checks.check_normalisation, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), Fake)
    assert "three numbers" in _say(checks.check_normalisation, (0.5,), (0.5,), Fake)


def test_check_layerwise_lr_results_and_val_loss():
    groups = [{"name": n, "lr": lr} for n, lr in (("stem", 1e-5), ("stem.no_decay", 1e-5), ("stage1", 1e-4),
                                                   ("head", 1e-3))]
    assert _say(checks.check_layerwise, groups).startswith("Correct: 3 groups")
    assert "wanted 1e-05" in _say(checks.check_layerwise, [{"name": "head", "lr": 1e-3}, {"name": "x", "lr": 1e-3}])

    from tlkit.history import History

    h = History([{"epoch": 1, "val_loss": 0.2, "val_acc": 0.95}])
    assert _say(checks.check_val_loss, h, 0.3).startswith("Correct:")
    assert _say(checks.check_val_loss, h, 0.1).startswith("Not yet:")


def test_check_better_layer_choice_and_too_high():
    assert _say(checks.check_better_layer, "stage3", {"stage3": 0.99, "stage8": 0.6}).startswith("Correct:")
    assert _say(checks.check_better_layer, "stage8", {"stage3": 0.99, "stage8": 0.6}).startswith("Not yet:")
    table = [{"backbone": "a", "params_M": 5.0, "img_per_s": 40}, {"backbone": "b", "params_M": 3.0, "img_per_s": 50},
             {"backbone": "c", "params_M": 25.0, "img_per_s": 90}]
    assert _say(checks.check_choice, "b", table, 6.0).startswith("Correct: b")
    assert "over the 6 M budget" in _say(checks.check_choice, "c", table, 6.0)
    assert "faster" in _say(checks.check_choice, "a", table, 6.0)
    verdicts = {1e-3: ("good", ""), 1e-1: ("too high", "x"), 1.0: ("too high", "y")}
    assert _say(checks.check_too_high, 0.1, verdicts).startswith("Correct:")
    assert "smallest" in _say(checks.check_too_high, 1.0, verdicts)
    none_high = {1e-3: ("good", ""), 1e-1: ("good", "")}  # e.g. test mode's tiny features
    assert "no rate was too high" in _say(checks.check_too_high, "none in this run", none_high)


def test_readme_concept_map_sections_exist_as_headings():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\|[^|]+\| (0[1-9]) · (.+?) \|$", readme, flags=re.M)
    assert len(rows) >= 15, "the README's concept map has moved or changed format"
    headings = {}
    for name in EXPECTED:
        nb = _committed(name)
        headings[name[:2]] = [ln for c in nb.cells if c.cell_type == "markdown"
                              for ln in c.source.splitlines() if ln.startswith("#")]
    for number, quoted in rows:
        for section in re.findall(r'"([^"]+)"', quoted):
            assert any(section in h for h in headings[number]), f"README points to {number} · {section!r}"


# --------------------------------------------------------------------------
# notebook 06: the exercise checks

def test_check_adabn_numbers_counts_means_and_variances():
    from tlkit import load_backbone

    model = load_backbone("efficientnet_lite0", pretrained=False, num_classes=2)
    ref = checks.adabn_statistics(model)
    assert ref == 42_016  # 49 BatchNorm layers of Lite0, a mean and a variance per channel
    assert _say(checks.check_adabn_numbers, ref, model).startswith("Correct:")
    assert "running variance" in _say(checks.check_adabn_numbers, ref // 2, model)
    params = sum(p.numel() for p in model.parameters())
    assert "parameters" in _say(checks.check_adabn_numbers, params, model)
    assert "replace the None" in _say(checks.check_adabn_numbers, None, model)


def test_check_purity_recomputes_two_means():
    import torch

    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 20 + [1] * 20)
    features = torch.randn(40, 5, generator=gen) + 6.0 * labels[:, None]  # two far-apart blobs
    assert checks.kmeans_purity(features, labels) == 1.0
    assert _say(checks.check_purity, 1.0, features, labels).startswith("Correct:")
    assert "far from" in _say(checks.check_purity, 0.6, features, labels)
    assert "between 0.5 and 1" in _say(checks.check_purity, 0.2, features, labels)
    noise = torch.randn(40, 5, generator=gen)
    assert checks.kmeans_purity(noise, labels) < 0.8  # no structure: near chance


def test_check_combined_shift_recomputes_the_accuracy(tiny_datasets, lite0_64, tmp_path, one_torch_thread,
                                                     monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path))  # the check's feature pass caches there
    from tlkit.data import transforms_for
    from tlkit.features import extract_features, train_head
    from tlkit.shifts import shifted

    train, val = tiny_datasets
    tf = transforms_for(lite0_64)
    head, _ = train_head(extract_features(lite0_64, train.with_transform(tf), cache_dir=tmp_path, progress=False),
                         None, epochs=2, seed=0)
    data = shifted(val, "dark:3+blur:3").with_transform(tf)
    ref = checks.shifted_accuracy(head, lite0_64, data)
    assert 0.0 <= ref <= 1.0
    assert _say(checks.check_combined_shift, ref, head, lite0_64, data).startswith("Correct:")
    wrong = ref - 0.2 if ref >= 0.2 else ref + 0.2
    assert "is not what the head scores" in _say(checks.check_combined_shift, wrong, head, lite0_64, data)
    assert "percentage" in _say(checks.check_combined_shift, 80, head, lite0_64, data)


# ---------------------------------------------------------------- issue 15: panels visible without a kernel
SNAPSHOTS_05 = {"freeze_state", "training_curves", "lr_find", "lr_compare", "lr_finetune", "strategy_curves",
                "grad_cam"}  # what each panel's snapshot() is named (widgets/_snapshot.py, key tlkit_snapshot)


def test_committed_05_shows_every_panel_as_a_static_image():
    # GitHub draws no ipywidgets: after each panel's run, 05 displays panel.snapshot(), an image/png
    # output whose metadata names it. The LR range test, a Grad-CAM heatmap and the freeze state at least.
    import base64

    cells = _committed("05_live_lab").cells
    shown = {}
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("tlkit_snapshot")
            if name is None:
                continue
            png = base64.b64decode(out["data"]["image/png"])
            width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
            assert png.startswith(b"\x89PNG\r\n\x1a\n") and width >= 300 and height >= 150 and len(png) > 3_000, name
            assert cells[i - 1].cell_type == "markdown" and "readers without a kernel" in cells[i - 1].source, name
            shown[name] = out["data"]["text/plain"]
    assert set(shown) == SNAPSHOTS_05, f"missing: {SNAPSHOTS_05 - set(shown)}; run tools/make_notebooks.py --only 05"
    freeze = shown["freeze_state"].splitlines()  # the state after the run: stage7, stage8 and head train
    assert freeze[0].startswith("trainable: ") and len(freeze) == 11
    assert [ln.split(":")[1].split(",")[0].strip() for ln in freeze[1:]] == ["frozen"] * 7 + ["trainable"] * 3
    assert "Suggested learning rate" in shown["lr_find"] and "dogs" in shown["grad_cam"]


def test_peak_memory_follows_a_process_found_late_and_its_children():
    """The build's memory figure: a pid that appears later is picked up, a child's memory counts."""
    import subprocess
    import time as _time

    code = ("import subprocess, sys, time; b = bytearray(150 * 2**20); "
            "c = subprocess.Popen([sys.executable, '-c', 'b = bytearray(100 * 2**20); import time; time.sleep(1.5)']); "
            "time.sleep(1.5); c.wait()")
    box = {}
    with mk.PeakMemory(lambda: box.get("pid"), interval=0.05) as memory:
        _time.sleep(0.2)  # the "kernel" is not started yet: the sampler waits for its pid
        proc = subprocess.Popen([sys.executable, "-c", code])
        box["pid"] = proc.pid
        proc.wait()
    assert memory.peak_rss >= 150 * 2**20            # the process itself
    assert memory.peak >= 230 * 2**20                # with its child's 100 MiB
    assert memory.peak < 1024 * 2**20
