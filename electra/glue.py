"""The eight GLUE tasks of the ELECTRA paper: what each holds, and its train/dev examples.

Two sources, the same examples:

* ``--data-dir DIR``: GLUE's own TSV files as its download script leaves them, ``train.tsv`` and ``dev.tsv``
  (MNLI: ``dev_matched.tsv``), read with the csv module (tab-separated, ``QUOTE_NONE``: GLUE text holds bare quotes).
  CoLA has no header (source, label, original-label, sentence); every other task has a header naming its columns.
* no ``--data-dir``: ``datasets.load_dataset("nyu-mll/glue", task)`` (needs the datasets library and the network,
  or a warm Hugging Face cache).

Labels are integers in the order of :attr:`GlueTask.labels` (the Hugging Face GLUE order, so both sources give the
same ids; for MRPC and QQP 1 is the positive class of F1: equivalent, duplicate); STS-B's are float scores in [0, 5].
Every failure names the task, the file and what was expected (a ValueError or FileNotFoundError, one line).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TASKS", "GlueExamples", "GlueTask", "get_task", "load_glue", "read_tsv"]


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    Attributes:
        name: ``cola``, ``sst2``, ...
        text_columns: the TSV columns holding the text: one (single sentence) or two (a pair), by header name
            (CoLA: by position, its files have no header).
        label_column: the TSV column of the label (CoLA: a position).
        labels: the label strings of the TSV files, in id order; ``None`` for STS-B (a float score).
        hub_columns: the columns of the Hugging Face ``nyu-mll/glue`` dataset (text, text, ...).
        dev_file: ``dev.tsv``, or ``dev_matched.tsv`` for MNLI.
        header: whether the TSV files start with a header row.
        skip_short_rows: rows with missing fields are skipped (QQP, as GLUE's reference processors do: its
            train.tsv holds a few broken lines) instead of refused.
    """

    name: str
    text_columns: tuple
    label_column: str | int
    labels: tuple | None
    hub_columns: tuple
    dev_file: str = "dev.tsv"
    header: bool = True
    skip_short_rows: bool = False

    @property
    def num_labels(self) -> int:
        """1 for the regression task (STS-B), else the number of classes."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    def layout(self) -> str:
        """The expected TSV layout in words (for error messages)."""
        if not self.header:
            return "no header; columns (source, label, original-label, sentence)"
        return f"a header with the columns {', '.join(map(repr, (*self.text_columns, self.label_column)))}"


_TASK_LIST = (
    GlueTask("cola", (3,), 1, ("0", "1"), ("sentence",), header=False),
    GlueTask("sst2", ("sentence",), "label", ("0", "1"), ("sentence",)),
    GlueTask("mrpc", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("sentence1", "sentence2")),
    GlueTask("stsb", ("sentence1", "sentence2"), "score", None, ("sentence1", "sentence2")),
    GlueTask("qqp", ("question1", "question2"), "is_duplicate", ("0", "1"), ("question1", "question2"),
             skip_short_rows=True),
    GlueTask("mnli", ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction"),
             ("premise", "hypothesis"), dev_file="dev_matched.tsv"),
    GlueTask("qnli", ("question", "sentence"), "label", ("entailment", "not_entailment"), ("question", "sentence")),
    GlueTask("rte", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), ("sentence1", "sentence2")),
)
TASK_SPECS = {task.name: task for task in _TASK_LIST}
TASKS = tuple(TASK_SPECS)  # cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte


def get_task(name) -> GlueTask:
    """The :class:`GlueTask` called ``name`` (case-insensitive); ValueError naming the eight tasks otherwise."""
    key = name.lower().replace("-", "") if isinstance(name, str) else None
    if key not in TASK_SPECS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {name!r}")
    return TASK_SPECS[key]


@dataclass
class GlueExamples:
    """The examples of one split: ``texts_a`` [N] str, ``texts_b`` [N] str or None (single-sentence tasks),
    ``labels`` [N] int class ids (float scores for STS-B)."""

    texts_a: list
    texts_b: list | None
    labels: list

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int | None) -> GlueExamples:
        """The first ``n`` examples (all when ``n`` is None)."""
        if n is None:
            return self
        return GlueExamples(self.texts_a[:n], None if self.texts_b is None else self.texts_b[:n], self.labels[:n])


def _label(task: GlueTask, text: str, where: str):
    if task.is_regression:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{task.name}: {where}: the score {text!r} is not a number (STS-B scores lie in "
                             "[0, 5])") from None
    try:
        return task.labels.index(text)
    except ValueError:
        raise ValueError(f"{task.name}: {where}: unknown label {text!r}; expected one of "
                         f"{', '.join(task.labels)} ({task.layout()})") from None


def read_tsv(task, path) -> GlueExamples:
    """The examples of one GLUE TSV file of ``task`` (a name or :class:`GlueTask`).

    Raises:
        FileNotFoundError: no such file (the message names the task, the file and the expected columns).
        ValueError: a header without the task's columns, a row with too few fields, an unknown label, or a file
            that is not UTF-8 (each naming the task and the file, with the line where one is at fault).
    """
    task = get_task(task.name if isinstance(task, GlueTask) else task)
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such file"
        raise FileNotFoundError(f"{task.name}: {what}: {path}; expected GLUE's {path.name} with {task.layout()}")
    texts, labels = [[] for _ in task.text_columns], []
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = next(rows, None) if task.header else None
            if task.header:
                missing = [c for c in (*task.text_columns, task.label_column) if c not in (header or [])]
                if missing:
                    raise ValueError(f"{task.name}: {path} lacks the column(s) {', '.join(map(repr, missing))}; "
                                     f"expected {task.layout()} (GLUE's {task.name} TSV)")
                columns = [header.index(c) for c in (*task.text_columns, task.label_column)]
            else:
                columns = [*task.text_columns, task.label_column]
            needed = max(columns) + 1
            for row in rows:
                where = f"{path} line {rows.line_num}"
                if not row or row == [""]:
                    continue
                if len(row) < needed:
                    if task.skip_short_rows:
                        continue
                    raise ValueError(f"{task.name}: {where} has {len(row)} field(s), expected at least {needed}: "
                                     f"{task.layout()}")
                labels.append(_label(task, row[columns[-1]], where))
                for column, values in zip(columns, texts):
                    values.append(row[column])
        except UnicodeDecodeError as error:
            raise ValueError(f"{task.name}: {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
        except csv.Error as error:
            raise ValueError(f"{task.name}: {path} line {rows.line_num}: {error}") from None
    if not labels:
        raise ValueError(f"{task.name}: {path} holds no examples; expected {task.layout()}")
    return GlueExamples(texts[0], texts[1] if len(texts) > 1 else None, labels)


def _from_hub(task: GlueTask) -> tuple[GlueExamples, GlueExamples]:
    """train and dev (validation; MNLI: validation_matched) of ``nyu-mll/glue`` through the datasets library."""
    hint = (f"pass --data-dir DIR holding GLUE's {task.name} train.tsv and {task.dev_file} (this machine may be "
            "offline)")
    try:
        import datasets
    except ImportError:
        raise ValueError(f"{task.name}: no --data-dir, and the datasets library is not installed; {hint}") from None
    try:
        data = datasets.load_dataset("nyu-mll/glue", task.name)
    except Exception as error:  # no network, no cache: the hub's errors vary by version
        reason = " ".join(str(error).split())[:200]
        raise ValueError(f"{task.name}: cannot load GLUE from the Hugging Face hub ({type(error).__name__}: "
                         f"{reason}); {hint}") from None
    splits = []
    for split in ("train", "validation_matched" if task.name == "mnli" else "validation"):
        if split not in data:
            raise ValueError(f"{task.name}: the hub's GLUE data has no {split!r} split; {hint}")
        table = data[split]
        missing = [c for c in (*task.hub_columns, "label") if c not in table.column_names]
        if missing:
            raise ValueError(f"{task.name}: the hub's GLUE {split} split lacks the column(s) {', '.join(missing)}; "
                             f"{hint}")
        texts = [list(table[c]) for c in task.hub_columns]
        labels = [float(v) for v in table["label"]] if task.is_regression else [int(v) for v in table["label"]]
        splits.append(GlueExamples(texts[0], texts[1] if len(texts) > 1 else None, labels))
    return splits[0], splits[1]


def load_glue(task, data_dir=None) -> tuple[GlueExamples, GlueExamples]:
    """``(train, dev)`` examples of ``task``: from GLUE's TSV files in ``data_dir`` (``train.tsv``, ``dev.tsv``;
    MNLI ``dev_matched.tsv``), or, when ``data_dir`` is None, from the Hugging Face hub.

    Raises:
        ValueError: an unknown task, a TSV without the task's columns, or no ``data_dir`` while the hub cannot be
            reached (the message says to pass ``--data-dir``).
        FileNotFoundError: ``data_dir`` or one of its files is missing.
    """
    task = get_task(task)
    if data_dir is None:
        return _from_hub(task)
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"{task.name}: --data-dir: no such directory: {str(data_dir)!r}; expected a folder "
                                f"holding GLUE's train.tsv and {task.dev_file}")
    return read_tsv(task, directory / "train.tsv"), read_tsv(task, directory / task.dev_file)
