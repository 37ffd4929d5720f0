"""The running prose of a reStructuredText source (the Python documentation's ``_sources``), markup removed.

Sphinx's rendering, roughly, without Sphinx: roles, literals, links and emphasis become their text; comments,
targets, code and doctest blocks, tables, titles, field lists and directive signatures are dropped; what is
left must look like sentences (:func:`_is_prose`).  Used by the built-in ``python-docs`` corpus
(:mod:`electra.corpus`); change ``electra.corpus._CLEANER_VERSION`` with the rules so caches are rebuilt.
"""
from __future__ import annotations

import re

__all__ = ["clean_rest"]

_DIRECTIVE = re.compile(r"\.\.\s+([\w:|-]+)::(.*)$")
_ADORNMENT = re.compile(r"""([=\-~^*#"'`+:._])\1{2,}\s*$""")
_BULLET = re.compile(r"([-*+\u2022]|\d+[.)]|#\.|\(\d+\)|[a-z][.)])\s+")
_SIMPLE_TABLE = re.compile(r"=+( +=+)+")
_FIELD = re.compile(r":[\w .-]+:(\s|$)")
# Directives whose body is prose and whose own line holds no text (signatures, options): keep the body.
_SIGNATURE_DIRECTIVES = {
    "function", "method", "class", "data", "attribute", "exception", "describe", "decorator",
    "classmethod", "staticmethod", "coroutinefunction", "coroutinemethod", "abstractmethod",
    "decoratormethod", "opcode", "cmdoption", "option", "envvar", "pdbcommand", "object", "program",
    "c:function", "c:member", "c:type", "c:var", "c:macro", "c:struct", "c:data", "c:enum",
    "c:enumerator", "c:union", "module", "currentmodule", "rubric",
}
# Directives whose argument line is text too (note:: Text...), except the version of version notes.
_ADMONITIONS = {"note", "warning", "seealso", "impl-detail", "tip", "important", "caution",
                "attention", "hint", "topic", "sidebar", "admonition", "only", "versionadded",
                "versionchanged", "deprecated", "deprecated-removed"}
_VERSION_NOTES = {"versionadded", "versionchanged", "deprecated", "deprecated-removed"}
# Every rule stays within one line: _plain_inline runs them once over all paragraphs of a file joined
# by newlines, which is 4x faster than once per paragraph.
_INLINE_RULES = [
    (re.compile(r":(rfc|pep):`(\d+)[^`\n]*`"), lambda m: f"{m.group(1).upper()} {m.group(2)}"),
    (re.compile(r":(?:issue|gh):`(\d+)`"), r"issue \1"),
    (re.compile(r":[\w:+-]+:`([^`<\n]*?) *<[^`>\n]*>`"), r"\1"),     # :ref:`text <target>`
    (re.compile(r":(?:func|meth|c:func):`[~!]?(?:(?<=~)[^`\n]*\.)?([^`\n]+?)(?:\(\))?`"), r"\1()"),
    (re.compile(r":[\w:+-]+:`~(?:[^`\n]*\.)?([^`.\n]+)`"), r"\1"),   # :class:`~a.b.C` shows C
    (re.compile(r":[\w:+-]+:`!?([^`\n]+)`"), r"\1"),
    (re.compile(r"``(.+?)``"), r"\1"),
    (re.compile(r"`([^`\n]+)`_{0,2}"), lambda m: _LINK_TARGET.sub("", m.group(1))),  # `text <url>`_
    (re.compile(r"\[(?:#[\w-]*|\d+|\*)\]_"), ""),                      # footnote references
    (re.compile(r"\|[\w -]+\|_{0,2}"), ""),                            # |substitutions|
    (re.compile(r"\*\*([^*\s](?:[^*\n]*[^*\s])?)\*\*"), r"\1"),
    (re.compile(r"\*(?<![\w*]\*)([^*\s](?:[^*\n]*[^*\s])?)\*(?![\w*])"), r"\1"),
    (re.compile(r"_(?<=[A-Za-z0-9]_)(?=[\s.,;:!?)]|$)", re.MULTILINE), ""),    # word_ hyperlink references
    (re.compile(r"\\(.)"), r"\1"),
    (re.compile(r"  +"), " "),  # tabs were expanded line by line
    (re.compile(r" (?=[,.;:](?:\s|$))", re.MULTILINE), ""),
]
_LINK_TARGET = re.compile(r"\s*<[^<>]*>$")
_NON_LETTERS = re.compile(r"[^A-Za-z\u00c0-\u024f]+")


def _plain_inline(text: str) -> str:
    """reST inline markup as Sphinx would render it, roughly: roles, literals, links, emphasis.
    Works line by line, so ``text`` may hold many paragraphs, one per line."""
    for pattern, replacement in _INLINE_RULES:
        text = pattern.sub(replacement, text)
    return text


def _is_prose(paragraph: str) -> bool:
    """Sentences rather than code, tables or fragments: enough words, mostly letters, an ending."""
    words = paragraph.count(" ") + 1  # whitespace is already collapsed to single spaces
    letters = len(_NON_LETTERS.sub("", paragraph))
    return (words >= 6 and letters >= 0.7 * (len(paragraph) - words + 1)
            and paragraph[-1] in ".!?:;)\"'" and paragraph[0] not in "<>{}[]=$%#@/\\")


def clean_rest(text: str) -> list[str]:
    """The prose paragraphs of a reStructuredText source, markup removed, one str per paragraph.

    Dropped: comments and targets, code/doctest/literal blocks (``::``), tables, section titles,
    field lists, directive signatures and options, and any paragraph :func:`_is_prose` rejects.
    Kept: paragraph text, list items (without bullets) and the prose bodies of directives.
    """
    paragraphs: list[str] = []
    current: list[str] = []
    skip_deeper_than: int | None = None  # drop every line indented deeper than this (a block body)
    skip_until_blank = False  # drop a directive's signature continuation and option lines
    rejected = False  # the current paragraph holds a table or doctest line
    in_list = False  # the current paragraph is a list item

    def flush(literal_follows: bool = False) -> None:
        nonlocal current, rejected
        if current and not rejected:
            paragraph = " ".join(current)
            if literal_follows:  # "text::" renders as "text:", a lone "::" vanishes
                paragraph = paragraph[:-2].rstrip() + (":" if not paragraph[:-2].endswith(" ") else "")
            if not _FIELD.match(paragraph):
                paragraphs.append(paragraph)
        current, rejected = [], False

    for raw in text.splitlines():
        line = raw.expandtabs(8).rstrip()
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if skip_deeper_than is not None:
            if not stripped or indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if skip_until_blank:
            if stripped:
                continue
            skip_until_blank = False
        if not stripped:
            flush()
            continue
        directive = _DIRECTIVE.match(stripped)
        if directive or stripped == ".." or stripped.startswith(".. "):
            flush()
            name, argument = (directive.group(1), directive.group(2).strip()) if directive else ("", "")
            if name in _SIGNATURE_DIRECTIVES:
                skip_until_blank = True
            elif name in _ADMONITIONS:
                if name in _VERSION_NOTES:  # ".. versionchanged:: 3.2 text" -> "text"
                    argument = argument.split(" ", 1)[1] if " " in argument else ""
                if argument:
                    current.append(argument)
            else:  # comments, targets, substitutions, code, tables, toctrees, includes, ...
                skip_deeper_than = indent
            continue
        if _ADORNMENT.match(stripped):  # title underline/overline or transition: drop the title
            current, rejected = [], False
            continue
        if stripped.startswith((">>>", "+-", "+=", "|")) or _SIMPLE_TABLE.fullmatch(stripped):
            rejected = True
        # A list starts after a blank line; its items need none between them.  Elsewhere a leading
        # "-" or "+" continues the paragraph ("... (b.replace(tzinfo=None)\n- b.utcoffset())").
        bullet = _BULLET.match(stripped) if not current or in_list else None
        if bullet and current:
            flush()
        if not current:
            in_list = bullet is not None
        current.append(stripped[bullet.end():] if bullet else stripped)
        if stripped.endswith("::"):
            flush(literal_follows=True)
            skip_deeper_than = indent
    flush()
    plain = _plain_inline("\n".join(paragraphs)).split("\n")
    return [p.strip() for p in plain if p.strip() and _is_prose(p.strip())]
