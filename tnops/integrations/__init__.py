"""Drop-in use of tnops from other libraries' models and trainers.

``tnops.integrations.transformers``: ``apply_true_negatives(model, synonyms, ...)`` / ``remove_true_negatives``
for Hugging Face ``*ForMaskedLM`` instances; ``tnops.integrations.trainer_callback``: a ``TrainerCallback``
that logs the correction rate. Importing this package imports neither transformers nor those modules.
"""
