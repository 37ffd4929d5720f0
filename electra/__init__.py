"""A thin ELECTRA on tnops: model, masking, data and the pre-training CLI (``electra-pretrain``)."""
from electra.config import ElectraTNConfig
from electra.modeling import ElectraTNForPretraining, ElectraTNOutput

__all__ = ["ElectraTNConfig", "ElectraTNForPretraining", "ElectraTNOutput"]
