"""ELECTRA corpora: documents from files, datasets and the built-in corpora; the reST cleaner; sentences."""
import sys
from collections import Counter

import pytest

from electra import corpus as corpus_module
from electra.corpus import load_documents
from electra.rst_prose import clean_rest
from electra.sentences import split_sentences


# ------------------------------------------------------------------------------------- documents
def test_file_documents_are_blank_line_blocks(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("First doc line one.\nline two.\n\n  \t\nSecond doc.\n\n\n\nThird doc.\n")
    assert load_documents(path) == ["First doc line one.\nline two.", "Second doc.", "Third doc."]
    assert load_documents(str(path)) == load_documents(path)


def test_directory_documents_recursive_sorted_and_pattern(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("from b\n\nsecond of b")
    (tmp_path / "sub" / "a").write_text("from sub/a")  # extension-less files count
    (tmp_path / "c.md").write_text("from c")
    (tmp_path / ".hidden.txt").write_text("hidden")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    assert load_documents(tmp_path) == ["from b", "second of b", "from sub/a"]
    assert load_documents(tmp_path, pattern="*.md") == ["from c"]


def test_document_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_file.txt"):
        load_documents(tmp_path / "no_such_file.txt")
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        load_documents("no_such_dir/corpus")
    (tmp_path / "blank.txt").write_text("\n \n\n")
    with pytest.raises(ValueError, match="empty corpus"):
        load_documents(tmp_path / "blank.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="pattern"):
        load_documents(tmp_path / "d", pattern="*.rst")
    with pytest.raises(TypeError, match="corpus"):
        load_documents(42)
    with pytest.raises(TypeError, match="pattern"):
        load_documents(tmp_path, pattern=3)
    with pytest.raises(ValueError, match="empty corpus"):
        load_documents(["", "   "])
    with pytest.raises(ValueError, match="unknown built-in"):
        load_documents("builtin:shakespeare")


def test_datasets_name_needs_the_datasets_library(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError, installed or not
    with pytest.raises(ImportError, match="pip install datasets"):
        load_documents("wikitext:wikitext-2-raw-v1:train")
    with pytest.raises(ImportError, match="pip install datasets"):
        load_documents("hf:Salesforce/wikitext")


# -------------------------------------------------------------------------------- default corpus
def test_default_corpus_is_real_english():
    source = corpus_module.resolve_corpus(None)
    documents = load_documents()
    text = "\n".join(documents)
    assert len(text) > 2_000_000, source.description
    counts = Counter(text.lower().split())
    for word in ("the", "of", "and", "is", "to", "a", "in"):
        assert counts[word] > 5_000, word
    assert counts.most_common(1)[0][0] == "the"
    if source.identity["builtin"] == "python-docs":  # the markup is gone
        for markup in (":func:`", ":class:`", ":ref:`", "\n.. ", "::\n", "\n>>>"):
            assert markup not in text, markup
        assert text.count("``") < 20  # a few literals broken across list-item lines survive
        sentences = split_sentences(documents[len(documents) // 2])
        assert len(sentences) > 10 and all(s[-1] in ".!?:;)\"'" for s in sentences[:-1])


def test_clean_rest_keeps_prose_only():
    source = """\
.. _label:

*************
A Title Here
*************

Some :func:`~os.path.join` prose with ``literal`` text, *emphasis* and a
`link <https://example.org>`_ that wraps across lines.  See :pep:`8` too.

.. function:: spam(eggs, ham=None)
   :noindex:

   Return the spam made of *eggs*, as described in :ref:`the guide <guide>`.

   .. versionchanged:: 3.2
      Added the ham parameter to the function.

For example, the following code runs::

   >>> spam(1)
   2

>>> spam(2)
3

.. code-block:: python

   print("this is code, not prose at all")

+-------+-------+
| a table cell  |
+-------+-------+

* A bullet item with enough words to count as prose.
* Another bullet item that also has plenty of words.

.. This comment is long enough to be prose but it is a comment.
"""
    assert clean_rest(source) == [
        "Some join() prose with literal text, emphasis and a link that wraps across lines. See PEP 8 too.",
        "Return the spam made of eggs, as described in the guide.",
        "Added the ham parameter to the function.",
        "For example, the following code runs:",
        "A bullet item with enough words to count as prose.",
        "Another bullet item that also has plenty of words.",
    ]


def test_split_sentences():
    text = ("Hello there, e.g. Alice said so. Mr. Smith met J. Doe in 2020! Was it late?\n"
            "Lead-in:\nwrapped line\ncontinues here. \"Quoted.\" 3 apples.")
    assert split_sentences(text) == [
        "Hello there, e.g. Alice said so.", "Mr. Smith met J. Doe in 2020!", "Was it late?", "Lead-in:",
        "wrapped line continues here.", "\"Quoted.\"", "3 apples."]


_GLOSS_LINES = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "00001740 00 a 01 able 0 005 = 05200169 n 0000 | (usually followed by `to') having the necessary "
    "means or skill; \"able to swim\"; \"she was able to program her computer\"  \n"
    "00002098 00 a 01 unable 0 002 = 05200169 n 0000 | not having the necessary means or skill  \n")


def test_wordnet_fallback_and_missing_default(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus_module, "PYTHON_DOCS_GLOBS", (str(tmp_path / "none"),))
    for pos in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{pos}").write_text(_GLOSS_LINES if pos == "adj" else "")
    monkeypatch.setattr(corpus_module, "WORDNET_DIR", str(tmp_path))
    assert load_documents() == [
        "able: (usually followed by `to') having the necessary means or skill. able to swim. "
        "she was able to program her computer.\nunable: not having the necessary means or skill."]
    monkeypatch.setattr(corpus_module, "WORDNET_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="python3-doc.*wordnet-base"):
        load_documents()
    with pytest.raises(FileNotFoundError, match="apt-get install python3-doc"):
        load_documents("builtin:python-docs")
