"""tnops: fused, memory-lean losses for language-model pre-training on true negatives."""
from tnops import nn, reference
from tnops.functional import linear_mlm_loss, mlm_loss, rtd_loss, sentence_sr_loss, sr_loss
from tnops.outputs import MLMLossOutput
from tnops.synonyms import SynonymTable

__version__ = "0.1.0"
__all__ = ["MLMLossOutput", "SynonymTable", "linear_mlm_loss", "mlm_loss", "nn", "reference", "rtd_loss",
           "sentence_sr_loss", "sr_loss", "__version__"]
