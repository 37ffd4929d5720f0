"""Synonym tables for hard correction: CSR storage, WordNet / thesaurus / embedding sources (DESIGN §3)."""
from .embeddings import build_embedding_table, read_word_vectors
from .mythes import MythesThesaurus, build_mythes_table, read_mythes
from .table import SynonymTable
from .tokens import VocabularyWords, analyze_vocabulary, detect_family, load_stopwords, token_word
from .vocab import Vocabulary, load_vocab, vocabulary_hash
from .wordnet import build_wordnet_table, install_debian_wordnet, load_wordnet

__all__ = [
    "MythesThesaurus", "SynonymTable", "Vocabulary", "VocabularyWords", "analyze_vocabulary", "build_embedding_table",
    "build_mythes_table", "build_wordnet_table", "detect_family", "install_debian_wordnet", "load_stopwords",
    "load_vocab", "load_wordnet", "read_mythes", "read_word_vectors", "token_word", "vocabulary_hash",
]
