"""Build the course notebooks from their sources, run them, and save them with outputs.

Each notebook is written as a percent-format Python script in
``notebooks/src/`` (the only file anyone edits):

* ``# %% [markdown]`` starts a Markdown cell; its lines are written as
  comments (``# text``) and lose the ``# `` prefix in the notebook.
* ``# %%`` starts a code cell.
* ``# %% solution`` starts a code cell whose source is collapsed in
  JupyterLab and Colab (``metadata.jupyter.source_hidden``): the solution of
  an exercise, one click away. It runs in the build (a broken solution fails
  it, and outside test mode so does one whose check does not print
  "Correct:"), but its outputs are removed before the notebook is written,
  so the answer is not printed under the exercise on GitHub.
* ``# %% setup`` (an empty cell) becomes the shared first cell, ``SETUP_CELL``:
  on Colab it installs tlkit, elsewhere it does nothing.
* ``# %% profile`` becomes the shared ``PROFILE_PREAMBLE`` (threads, figure
  format, ``FAST`` and ``PROFILE``) followed by the cell's own lines (the
  notebook's ``SETTINGS``). The preamble holds IPython ``%config`` lines, so it
  lives here and the sources stay valid Python (``python -m py_compile``).
* ``# %% claim`` starts a claim check: a code cell, collapsed and tagged
  ``claim-check``, whose first line is ``# Claim check: ...``. It calls
  ``course_checks.claim(...)`` on the sentence above it; in the build a false
  claim fails the notebook (see below), in test mode it does nothing.
* Anything before the first ``# %%`` is a comment about the file and is dropped.

Cell ids come from the cell's kind and text (plus a counter for repeats), not
its position, so inserting a cell leaves the other ids alone.

``make notebooks`` runs this script. For each source it builds the notebook
(nbformat, kernelspec ``python3``), executes it with nbclient in the CPU
profile on the real data (``TLKIT_DATA_DIR`` must point at the folder that
holds ``cats_and_dogs_filtered/``), replaces this machine's paths in the
outputs by placeholders, refuses to write if any absolute path is left, drops
execution-timing metadata and writes ``notebooks/<name>.ipynb``. The kernel
runs with ``TLKIT_CLAIMS=1``, so a claim check whose sentence this run's
numbers contradict raises ``ClaimError``; the build then stops with the
notebook, the sentence and the numbers, and writes nothing for that notebook.
``TLKIT_BUILD_RAN`` lists the notebooks already run in this build with the
same feature cache (claims about cache reuse are judged only then).

The widgets' final state is saved in the notebook's metadata (nbclient's
``store_widget_state``), so JupyterLab, Notebook 7 and nbviewer draw the panels
as they were, not as ``VBox(children=...)`` text, before anyone runs a cell.
Models that no output shows (closed or replaced widgets, panels never displayed) are
dropped from it (:func:`drop_unseen_widgets`).
What the notebooks save (``runs/``) goes to a temporary folder.

Usage:
    TLKIT_DATA_DIR=/data python tools/make_notebooks.py            # all five
    TLKIT_DATA_DIR=/data python tools/make_notebooks.py --only 02  # one
    TLKIT_DATA_DIR=/data python tools/make_notebooks.py --fast     # test mode, writes nothing
    python tools/make_notebooks.py --no-execute --only 02          # sources only, no outputs
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = NOTEBOOKS / "src"
CELL_MARK = re.compile(r"^# %%(?P<rest>.*)$")
# An absolute path of a machine (Linux, macOS, Colab, Windows home) in an output.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~<$-])(/(?:work|root|tmp|home|Users|var|private|content|mnt|opt|srv|usr)/"
                           r"|[A-Za-z]:\\\\?Users\\)")
CLAIM_PREFIX = "# Claim check"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
CELL_OPTIONS = ("solution", "setup", "profile", "claim")

SETUP_CELL = """\
# Setup: on Colab, fetch the course and install tlkit (about a minute). Elsewhere this does nothing.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    if not os.path.isdir("/content/tlkit"):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1",
                        "https://github.com/tlkit-course/tlkit", "/content/tlkit"], check=True)
    # tlkit's dependencies are loose ranges, so pip keeps Colab's own torch, ipywidgets and transformers.
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "/content/tlkit[widgets,text,export]"], check=True)
    os.chdir("/content/tlkit/notebooks")  # course_checks.py lives next to the notebooks
    sys.path.insert(0, os.getcwd())"""

PROFILE_PREAMBLE = """\
import os

# On a shared CPU (Binder, Colab, a busy laptop), idle compute threads should sleep instead of
# spinning; spinning threads can make training many times slower when other processes
# compete for the cores. This only works when set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

# Figures inline (a figure a cell returns is drawn under it), as JPEG: photos make PNG
# notebooks ten times larger.
%matplotlib inline
%config InlineBackend.figure_formats = ["jpeg"]
%config InlineBackend.print_figure_kwargs = {"bbox_inches": "tight", "pil_kwargs": {"quality": 85}}

FAST = os.environ.get("TLKIT_FAST") == "1"
PROFILE = "test" if FAST else ("gpu" if torch.cuda.is_available() else "cpu")
"""

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# a reference to a widget model: in a model's state ("IPY_MODEL_<id>") or in an output ("model_id": "<id>")
MODEL_REF = re.compile(r'IPY_MODEL_([0-9a-f]+)|"model_id": ?"([0-9a-f]+)"')


# --------------------------------------------------------------------------
# Source script -> notebook

def parse_percent(text: str) -> list[dict]:
    """Cells of a percent-format script: ``[{"kind", "source", "hidden"}, ...]``.

    Example:
        >>> parse_percent("# %% [markdown]\\n# # Title\\n# %%\\nx = 1\\n")
        [{'kind': 'markdown', 'source': '# Title', 'hidden': False}, {'kind': 'code', 'source': 'x = 1', 'hidden': False}]
    """
    cells: list[dict] = []
    current: dict | None = None
    for line in text.splitlines():
        m = CELL_MARK.match(line)
        if m:
            rest = m.group("rest").strip()
            kind = "markdown" if rest.startswith("[markdown]") else "code"
            flags = rest.replace("[markdown]", "").split()
            unknown = [f for f in flags if f not in CELL_OPTIONS]
            if unknown:
                raise ValueError(f"Unknown cell marker option(s) {unknown} in {line!r}; valid: '# %%', "
                                 "'# %% [markdown]', '# %% solution', '# %% setup', '# %% profile', '# %% claim'.")
            current = {"kind": kind, "lines": [], "hidden": "solution" in flags, "flags": flags,
                       "claim": "claim" in flags}
            cells.append(current)
        elif current is not None:
            current["lines"].append(line)
    out = []
    for cell in cells:
        lines = cell["lines"]
        if cell["kind"] == "markdown":
            lines = [_uncomment(line) for line in lines]
        source = _with_template("\n".join(lines).strip("\n"), cell["flags"])
        if cell["claim"] and not source.startswith(CLAIM_PREFIX):
            raise ValueError(f"A '# %% claim' cell must start with {CLAIM_PREFIX!r} (so no reader takes it for "
                             f"course content), got {source.splitlines()[0] if source else ''!r}.")
        if source.strip():
            out.append({"kind": cell["kind"], "source": source, "hidden": cell["hidden"] or cell["claim"],
                        **({"claim": True} if cell["claim"] else {})})
    return out


def _with_template(source: str, flags: list[str]) -> str:
    """The cell's text with the shared setup cell or profile preamble filled in."""
    if "setup" in flags:
        if source.strip():
            raise ValueError("A '# %% setup' cell is filled from SETUP_CELL in tools/make_notebooks.py; "
                             f"leave it empty (it holds {source.splitlines()[0]!r}).")
        return SETUP_CELL
    if "profile" in flags:
        return PROFILE_PREAMBLE + source
    return source


def _uncomment(line: str) -> str:
    if line.startswith("# "):
        return line[2:]
    if line.rstrip() in ("#", ""):
        return ""
    raise ValueError(f"Markdown lines must start with '# ' (or be a bare '#'), got {line!r}.")


def build_notebook(src: Path) -> nbformat.NotebookNode:
    """The notebook (no outputs) for one source script.

    Example:
        >>> nb = build_notebook(SOURCES / "02_dog_vs_cat_classifier.py")
        >>> nb.metadata.kernelspec["name"]
        'python3'
    """
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC),
                   "language_info": {"name": "python", "pygments_lexer": "ipython3"},
                   "colab": {"provenance": [], "toc_visible": True}}
    seen: dict[str, int] = {}
    for cell in parse_percent(src.read_text(encoding="utf-8")):
        cell_id = cell_id_for(src.stem[:2], cell, seen)
        if cell["kind"] == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(cell["source"], id=cell_id))
            continue
        meta = {}
        if cell["hidden"]:
            meta = {"jupyter": {"source_hidden": True}, "tags": ["claim-check" if cell.get("claim") else "solution"]}
        nb.cells.append(nbformat.v4.new_code_cell(cell["source"], id=cell_id, metadata=meta))
    nbformat.validate(nb)
    return nb


def cell_id_for(prefix: str, cell: dict, seen: dict[str, int]) -> str:
    """``"<prefix>-<8 hex digits of the kind and text>"``, ``-2``, ``-3`` ... for repeats (``seen`` counts them).

    Built from the cell's content, not its position, so inserting or removing a
    cell leaves the ids of the others unchanged.

    Example:
        >>> cell_id_for("02", {"kind": "code", "source": "x = 1"}, {})
        '02-3523df12'
    """
    digest = hashlib.sha1(f"{cell['kind']}\0{cell['source']}".encode()).hexdigest()[:8]
    base = f"{prefix}-{digest}"
    seen[base] = seen.get(base, 0) + 1
    return base if seen[base] == 1 else f"{base}-{seen[base]}"


def cell_sources(nb: nbformat.NotebookNode) -> list[tuple[str, str, bool]]:
    """``(cell_type, source, hidden)`` per cell: what must match between source and notebook."""
    return [(c.cell_type, c.source, bool(c.metadata.get("jupyter", {}).get("source_hidden")))
            for c in nb.cells]


def source_files(only: list[str] | None = None) -> list[Path]:
    """The notebook sources, optionally only those whose name starts with one of ``only``."""
    files = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if only:
        files = [f for f in files if any(f.name.startswith(o) for o in only)]
        if not files:
            raise SystemExit(f"No notebook source matches {only}; have: {[f.name for f in source_files()]}")
    return files


# --------------------------------------------------------------------------
# Outputs: machine paths out, timing noise out

def path_replacements() -> list[tuple[str, str]]:
    """(this machine's path, placeholder) pairs, longest path first."""
    pairs = {}
    data = os.environ.get("TLKIT_DATA_DIR")
    if data:
        pairs[str(Path(data).resolve())] = "$TLKIT_DATA_DIR"
        pairs[data.rstrip("/")] = "$TLKIT_DATA_DIR"
    cache = os.environ.get("TLKIT_CACHE_DIR")
    if cache:
        pairs[str(Path(cache).resolve())] = "$TLKIT_CACHE_DIR"
    for site in {p for p in sys.path if p.endswith("site-packages")}:
        pairs[site] = "site-packages"
    pairs[str(NOTEBOOKS)] = "notebooks"
    pairs[str(ROOT)] = "."
    pairs[sys.prefix] = "<python>"
    pairs[sys.base_prefix] = "<python>"
    pairs[tempfile.gettempdir()] = "<tmp>"
    pairs[str(Path.home())] = "~"
    return sorted(((k, v) for k, v in pairs.items() if k and k != "/"), key=lambda kv: -len(kv[0]))


def scrub_text(text: str, replacements: list[tuple[str, str]]) -> str:
    for path, placeholder in replacements:
        text = text.replace(path, placeholder)
    return text


def _output_texts(output) -> list[tuple[object, str]]:
    """(container, key) of every text field of an output, to read or rewrite."""
    fields = []
    if output.output_type == "stream":
        fields.append((output, "text"))
    elif output.output_type == "error":
        fields.append((output, "evalue"))
        fields += [(output.traceback, i) for i in range(len(output.traceback))]
    else:
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/") or mime.endswith("json"):
                fields.append((output.data, mime))
    return fields


def _widget_texts(nb: nbformat.NotebookNode) -> list[tuple[object, object]]:
    """(container, key) of every string in the saved widget models' state.

    Their binary buffers (the PNGs of image widgets, base64) are left alone.
    """
    models = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    fields, stack = [], [model.get("state", {}) for model in models.values()]
    while stack:
        node = stack.pop()
        for key, value in (node.items() if isinstance(node, dict) else enumerate(node)):
            if isinstance(value, str):
                fields.append((node, key))
            elif isinstance(value, (dict, list)):
                stack.append(value)
    return fields


def drop_unseen_widgets(nb: nbformat.NotebookNode) -> int:
    """Drops the saved widget models that no output shows; returns how many (in place).

    nbclient saves every model the kernel ever opened, closed ones included. A
    front end draws a model only from an output's widget view, directly or
    through another drawn model (children, layout, style, a nested output), or
    as a link between drawn models. The rest (a panel driven in code but never
    displayed, a redraw's replaced rows) made notebook 05 7.0 MB instead of 1.6 MB.
    """
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state")
    if not state:
        return 0

    def refs(obj) -> set[str]:
        return {a or b for a, b in MODEL_REF.findall(json.dumps(obj))}

    seen: set[str] = set()
    stack = list(refs([cell.get("outputs", []) for cell in nb.cells]))
    while stack:
        key = stack.pop()
        if key not in seen and key in state:
            seen.add(key)
            stack.extend(refs(state[key]))
    links = {k for k, m in state.items() if m.get("model_name") in ("LinkModel", "DirectionalLinkModel")
             and refs(m) and refs(m) <= seen}  # both ends drawn
    gone = [k for k in state if k not in seen and k not in links]
    for key in gone:
        del state[key]
    return len(gone)


def scrub_outputs(nb: nbformat.NotebookNode, replacements: list[tuple[str, str]]) -> None:
    """Replaces machine paths in every output and in the saved widget state, and drops
    per-cell timing metadata (in place)."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
        for output in cell.get("outputs", []):
            for container, key in _output_texts(output):
                value = container[key]
                if isinstance(value, str):
                    container[key] = scrub_text(value, replacements)
    for container, key in _widget_texts(nb):
        container[key] = scrub_text(container[key], replacements)
    nb.metadata.pop("papermill", None)


def is_solution(cell) -> bool:
    """True for a ``# %% solution`` cell (a code cell tagged ``solution``)."""
    return cell.cell_type == "code" and "solution" in cell.metadata.get("tags", [])


def strip_solution_outputs(nb: nbformat.NotebookNode) -> int:
    """Empties the outputs of every solution cell (in place); returns how many cells had some.

    The solutions run in the build (and in nbval), so a broken one still fails it,
    but their "Correct: ..." must not sit under the exercise on GitHub.
    """
    stripped = 0
    for cell in nb.cells:
        if is_solution(cell):
            stripped += bool(cell.outputs)
            cell.outputs = []
    return stripped


def failing_solutions(nb: nbformat.NotebookNode) -> list[str]:
    """Ids of the executed solution cells whose output does not say "Correct:" (their check failed)."""
    return [cell.id for cell in nb.cells if is_solution(cell)
            and "Correct:" not in "".join(o.get("text", "") for o in cell.outputs)]


def find_machine_paths(nb: nbformat.NotebookNode) -> list[str]:
    """``"cell N: ...text..."`` for every output that still holds an absolute path."""
    found = []
    for n, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            for container, key in _output_texts(output):
                value = container[key]
                text = value if isinstance(value, str) else str(value)
                m = ABSOLUTE_PATH.search(text)
                if m:
                    found.append(f"cell {n}: ...{text[max(0, m.start() - 40):m.end() + 40]!r}...")
    for container, key in _widget_texts(nb):
        m = ABSOLUTE_PATH.search(container[key])
        if m:
            found.append(f"widget state: ...{container[key][max(0, m.start() - 40):m.end() + 40]!r}...")
    return found


# --------------------------------------------------------------------------
# Running

def check_data() -> None:
    """Stops with a clear message when the dog-vs-cat data is not where the build needs it."""
    data = os.environ.get("TLKIT_DATA_DIR")
    if not data:
        raise SystemExit("Set TLKIT_DATA_DIR to the folder that holds cats_and_dogs_filtered/ "
                         "(the notebooks are built on the real data), e.g.\n"
                         "  TLKIT_DATA_DIR=../shared/data make notebooks")
    if not (Path(data) / "cats_and_dogs_filtered" / "train" / "cats").is_dir():
        raise SystemExit(f"TLKIT_DATA_DIR={data} does not hold cats_and_dogs_filtered/train/cats. "
                         "Unzip cats_and_dogs_filtered.zip there, or point TLKIT_DATA_DIR at its parent.")


def kernel_env(fast: bool, cache_dir: str | None = None, runs_dir: str | None = None,
               ran: list[str] | None = None) -> dict[str, str]:
    """Environment of the kernel: the CPU profile (or test mode), claims enforced, no progress bars.

    ``ran``: the notebooks (e.g. ``["01", "02"]``) this build already ran with the same feature cache.
    """
    env = dict(os.environ)
    if cache_dir:
        env["TLKIT_CACHE_DIR"] = cache_dir
    if runs_dir:
        env["TLKIT_RUNS_DIR"] = runs_dir  # read by the notebooks' profile cell
    env.pop("TLKIT_FAST", None)
    if fast:
        env["TLKIT_FAST"] = "1"
    env["TLKIT_CLAIMS"] = "1"          # course_checks.claim raises on a contradicted sentence
    env["TLKIT_BUILD_RAN"] = " ".join(ran or [])
    # The kernelspec runs "python": make it this interpreter (the one with tlkit and ipykernel).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["TLKIT_PROGRESS"] = "0"       # tqdm widgets would clutter the committed outputs
    env["CUDA_VISIBLE_DEVICES"] = ""  # the committed notebooks show the CPU profile
    env.pop("MPLBACKEND", None)       # Agg (usual in test shells) would stop the kernel's inline figures
    env["PYTHONWARNINGS"] = env.get("PYTHONWARNINGS", "ignore::DeprecationWarning")
    return env


class ClaimFailed(RuntimeError):
    """A claim check (or any cell) failed while a notebook ran in the build."""


def _pss(p) -> int:
    """Proportional set size where the OS reports it (Linux), else RSS."""
    import psutil

    try:
        return p.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return p.memory_info().rss


class PeakMemory:
    """Samples a kernel and its descendants (DataLoader workers) in a thread, every ``interval`` seconds.

    ``pid`` is a process id, or a callable that returns it once the kernel has started (None
    before). ``peak``: the largest PSS summed over the tree (pages shared with forked workers count
    once: what a container's memory limit sees); ``peak_rss``: the largest RSS of the kernel itself.
    Both in bytes. Used by the build (each notebook's line) and by ``bench/notebooks.py``.
    """

    def __init__(self, pid, interval: float = 0.2):
        import threading

        self.pid, self.interval, self.peak, self.peak_rss = pid, interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _process(self):
        import psutil

        while not self._stop.is_set():
            pid = self.pid() if callable(self.pid) else self.pid
            if pid:
                return psutil.Process(pid)
            self._stop.wait(self.interval)
        return None

    def _run(self) -> None:
        import psutil

        try:
            process = self._process()
        except (psutil.Error, AttributeError):
            return
        while process is not None and not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)
                total = 0
                for p in [process, *process.children(recursive=True)]:
                    try:
                        total += _pss(p)
                    except psutil.Error:  # a worker that just exited
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _kernel_pid(client):
    """The kernel's process id once nbclient has started it, else None."""
    km = getattr(client, "km", None)
    return getattr(getattr(km, "provisioner", None), "pid", None)


def execute(nb: nbformat.NotebookNode, fast: bool = False, cache_dir: str | None = None,
            timeout: int = 900, runs_dir: str | None = None, ran: list[str] | None = None,
            memory: "PeakMemory | None" = None) -> float:
    """Runs every cell in a fresh kernel started in notebooks/; returns the seconds taken.

    ``memory``, when given, is filled with the kernel tree's peak memory (its ``pid`` is set here).

    The widgets' final state goes into ``nb.metadata.widgets``. Raises ClaimFailed naming the
    cell and the error (for a claim check: the sentence and the numbers) when a cell raises.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    old, new = dict(os.environ), kernel_env(fast, cache_dir, runs_dir, ran)
    os.environ.clear()
    os.environ.update(new)
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                                store_widget_state=True, record_timing=False,
                                resources={"metadata": {"path": str(NOTEBOOKS)}})
        start = time.perf_counter()
        sampler = memory or PeakMemory(None)
        sampler.pid = lambda: _kernel_pid(client)
        try:
            with sampler:
                client.execute()
        except CellExecutionError as exc:
            raise ClaimFailed(_failure(nb, exc)) from None
        return time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(old)


def _failure(nb: nbformat.NotebookNode, exc) -> str:
    """What failed: the cell (id and first line) and the exception's name and message."""
    failed = next((c for c in nb.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
    where = f"cell {failed.id} ({failed.source.splitlines()[0][:70]!r})" if failed is not None else "a cell"
    what = f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"
    return f"{where} raised {what}"


def make(src: Path, fast: bool, run: bool, cache_dir: str | None = None, runs_dir: str | None = None,
         ran: list[str] | None = None) -> None:
    """Builds one notebook, runs it, checks and writes it (not in test mode)."""
    nb = build_notebook(src)
    memory = PeakMemory(None)
    try:
        seconds = execute(nb, fast=fast, cache_dir=cache_dir, runs_dir=runs_dir, ran=ran, memory=memory) if run else 0.0
    except ClaimFailed as exc:
        raise SystemExit(f"{src.name}: {exc}\nNothing was written for this notebook.") from None
    wrong = failing_solutions(nb) if run and not fast else []  # test mode's tiny data: like the claims, not judged
    if wrong:
        raise SystemExit(f"{src.name}: these solution cells do not pass their own check (no 'Correct:'): "
                         f"{wrong}\nNothing was written for this notebook.")
    strip_solution_outputs(nb)
    extra = [(cache_dir, "$TLKIT_CACHE_DIR")] if cache_dir else []
    drop_unseen_widgets(nb)
    scrub_outputs(nb, sorted(path_replacements() + extra, key=lambda kv: -len(kv[0])))
    leaks = find_machine_paths(nb)
    if leaks:
        raise SystemExit(f"{src.name}: outputs still hold machine paths; print names, not paths:\n  "
                         + "\n  ".join(leaks[:10]))
    target = NOTEBOOKS / f"{src.stem}.ipynb"
    if fast:
        print(f"{src.stem}: ran in test mode in {seconds:.0f} s, peak memory {memory.peak / 2**20:.0f} MiB (not written)")
        return
    nbformat.write(nb, target)
    how = (f"executed in {seconds:.0f} s, peak memory {memory.peak / 2**20:.0f} MiB (kernel and workers, PSS; "
           f"load average {os.getloadavg()[0]:.1f})") if run else "sources only"
    print(f"{src.stem}: {how} -> notebooks/{target.name}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build, run and save the course notebooks.")
    p.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers or name prefixes, e.g. 02")
    p.add_argument("--fast", action="store_true", help="test mode (TLKIT_FAST=1); writes nothing")
    p.add_argument("--no-execute", action="store_true", help="write the notebooks without running them")
    p.add_argument("--reuse-cache", action="store_true",
                   help="use the usual feature cache ($TLKIT_CACHE_DIR or ~/.cache/tlkit) instead of a fresh one")
    args = p.parse_args(argv)
    if not args.no_execute:
        check_data()
    # By default the build starts from an empty feature cache, shared by the notebooks of this
    # build: 02 shows the real cost of the first feature pass, and 03-05 reuse its result.
    # What the notebooks save goes to a temporary runs/ (named so, as the outputs show it).
    with tempfile.TemporaryDirectory(prefix="tlkit-nb-cache-") as fresh, \
            tempfile.TemporaryDirectory(prefix="tlkit-nb-runs-") as scratch:
        cache_dir = None if args.reuse_cache else fresh
        ran: list[str] = []  # notebooks run so far with this cache: claims about reusing it are judged
        for src in source_files(args.only):
            make(src, fast=args.fast, run=not args.no_execute, cache_dir=cache_dir,
                 runs_dir=str(Path(scratch) / "runs"), ran=list(ran))
            ran.append(src.name[:2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
