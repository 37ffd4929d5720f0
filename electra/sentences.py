"""Sentence splitting for ELECTRA's example packer (documents -> sentences)."""
from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"""[.!?]+["')\]]*(?:[ \t]*\n\s*|\s+(?=["'(\[]?[A-Z0-9]))|:[ \t]*\n\s*""")
_ABBREVIATIONS = {"e.g", "i.e", "etc", "vs", "cf", "al", "mr", "mrs", "ms", "dr", "st", "no", "fig", "approx"}


def split_sentences(document: str) -> list[str]:
    """Split a document into sentences: after ``.``, ``!``, ``?`` (and closing quotes or brackets) or
    ``:`` that end a line, and after ``.!?`` followed by a capital, a digit or an opening quote.  Line breaks
    elsewhere are spaces, so wrapped paragraphs, one-sentence-per-line files and one-paragraph-per-line
    documents all split the same way.  Common abbreviations and initials do not end a sentence.

    Returns:
        list[str], each stripped and non-empty, whitespace collapsed.
    """
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(document):
        if "\n" not in match.group():
            word = document[start:match.start()].rsplit(None, 1)[-1:] or [""]
            word = word[0].lstrip("([\"'").lower()
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                continue
        sentences.append(document[start:match.end()])
        start = match.end()
    sentences.append(document[start:])
    return [" ".join(s.split()) for s in sentences if s.strip()]
