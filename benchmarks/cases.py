"""What the benchmark suite measures: shapes, providers, objectives, modes, dtypes, and each case's step.

A *case* is one (shape, dtype, mode, objective, provider): one forward (``fwd``, under ``torch.no_grad``, as an
evaluation runs it) or one forward+backward (``fwdbwd``) of the generator head ``logits = hidden @ weight.T + bias``
with its loss, at ``N`` rows, width ``E`` and a ``V``-token vocabulary.  Objectives:

* ``ce``: plain mean cross-entropy over the rows;
* ``tn``: the true-negative objective: a Gumbel-max sample per row, hard correction with a random table of 20
  synonyms per token, soft regularization with weight 0.5 (``true_negative_kwargs``).

Providers (``PROVIDERS``): the ``floor`` (the matmuls of any exact computation alone: logits for ``fwd``; logits,
``dh`` and ``dW`` for ``fwdbwd``; every case is reported against the floor of its shape, dtype and mode); ``eager``
(what a user writes in plain PyTorch, ``torch.rand`` Gumbel noise for ``tn``); ``compiled`` (``torch.compile`` of
``eager``); ``linear_ce`` (PyTorch's chunked ``F.linear_cross_entropy``, ``ce`` only); ``cce`` (Apple's Cut
Cross-Entropy, ``ce`` only, no bias argument, run exact with ``filter_eps=None``: ``impl="torch_compile"`` on CPU,
its Triton kernels on CUDA); ``liger`` (Liger-Kernel's fused linear cross-entropy, ``ce`` only, CUDA only);
``tnops_torch``, ``tnops_native``, ``tnops_triton`` (``tnops.linear_mlm_loss`` with that backend).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

SR_WEIGHT = 0.5
SEED = 1
SYNONYMS_PER_TOKEN = 20

# name -> (N rows, E width, V vocabulary, what it stands for)
SHAPES = {
    "a_bert": (2048, 256, 30522, "bert-base-uncased vocabulary, ELECTRA-small generator width"),
    "b_xlmr": (1024, 256, 250002, "XLM-R vocabulary"),
    "c_base": (2048, 768, 30522, "BERT/ELECTRA-base width"),
    "modernbert": (2048, 256, 50368, "ModernBERT vocabulary"),
    "tiny": (64, 32, 500, "CI smoke size"),
}
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
MODES = ("fwdbwd", "fwd")
OBJECTIVES = ("ce", "tn")
# name -> (objectives it computes, what it is)
PROVIDERS = {
    "floor": (("floor",), "matmuls alone (floor)"),
    "eager": (OBJECTIVES, "eager PyTorch"),
    "compiled": (OBJECTIVES, "torch.compile(eager)"),
    "linear_ce": (("ce",), "F.linear_cross_entropy"),
    "cce": (("ce",), "Cut Cross-Entropy"),
    "liger": (("ce",), "Liger fused linear CE"),
    "tnops_torch": (OBJECTIVES, "tnops torch backend"),
    "tnops_native": (OBJECTIVES, "tnops native"),
    "tnops_triton": (OBJECTIVES, "tnops triton"),
}


@dataclass(frozen=True)
class Case:
    """One benchmark case.  ``objective`` is ``"floor"`` exactly when ``provider`` is ``"floor"``."""

    shape: str
    dtype: str
    mode: str
    objective: str
    provider: str

    def __post_init__(self):
        for field, value, choices in (("shape", self.shape, SHAPES), ("dtype", self.dtype, DTYPES),
                                      ("mode", self.mode, MODES), ("provider", self.provider, PROVIDERS)):
            if value not in choices:
                raise ValueError(f"{field}: expected one of {', '.join(choices)}, got {value!r}")
        if self.objective not in PROVIDERS[self.provider][0]:
            raise ValueError(f"objective: {self.provider} computes {', '.join(PROVIDERS[self.provider][0])}, "
                             f"got {self.objective!r}")

    @property
    def id(self) -> str:
        """``shape-dtype-mode-objective-provider``, e.g. ``a_bert-fp32-fwdbwd-tn-tnops_native``."""
        return "-".join((self.shape, self.dtype, self.mode, self.objective, self.provider))

    @classmethod
    def from_id(cls, text: str) -> Case:
        parts = text.split("-")
        if len(parts) != 5:
            raise ValueError(f"case: expected shape-dtype-mode-objective-provider, got {text!r}")
        return cls(*parts)

    @property
    def floor(self) -> Case:
        """The floor case every case of this shape, dtype and mode is reported against."""
        return Case(self.shape, self.dtype, self.mode, "floor", "floor")

    @property
    def flop(self) -> int:
        """Matmul FLOPs credited to one call: ``2·N·V·E`` per matmul, 1 matmul forward, 3 forward+backward."""
        n, e, v, _ = SHAPES[self.shape]
        return 2 * n * v * e * (3 if self.mode == "fwdbwd" else 1)

    @property
    def label(self) -> str:
        """What a table row calls it, e.g. ``tnops native, TN``."""
        name = PROVIDERS[self.provider][1]
        return name if self.provider == "floor" else f"{name}, {self.objective.upper()}"


def all_cases(shapes, dtypes, modes, objectives, providers) -> list[Case]:
    """Every valid case of the given name lists, floors included, in a stable order (floors first)."""
    out = []
    for shape in shapes:
        for dtype in dtypes:
            for mode in modes:
                for provider in providers:
                    for objective in PROVIDERS[provider][0]:
                        if objective == "floor" or objective in objectives:
                            out.append(Case(shape, dtype, mode, objective, provider))
    return out


def emulated_half(dtype: str) -> bool:
    """True when this CPU has no native matmuls of half dtype ``dtype`` (no avx512_bf16/AMX/avx512_fp16: oneDNN
    emulates them, ~30× slower than float32 here on an AVX2 EPYC)."""
    import torch

    probe = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}.get(dtype)
    try:
        return probe is not None and not getattr(torch.ops.mkldnn, probe)()
    except (AttributeError, RuntimeError):  # the probe is private to torch: when it is gone, assume native
        return False


def unavailable(case: Case, device: str, emulated_half_ok: bool = False) -> str | None:
    """Why ``case`` cannot run on ``device`` in this installation (None: it can).  Cheap: imports no provider.
    Half-precision cases on a CPU without native half matmuls count as unavailable unless ``emulated_half_ok``."""
    import torch
    import torch.nn.functional as F

    if device == "cpu" and not emulated_half_ok and emulated_half(case.dtype):
        return (f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native {case.dtype} matmuls, which "
                f"oneDNN emulates ~30x slower than fp32 (--bench-emulated-half runs them anyway)")
    if case.provider == "linear_ce" and not (hasattr(F, "linear_cross_entropy")
                                             and hasattr(torch.nn, "LinearCrossEntropyOptions")):
        return f"torch {torch.__version__} has no F.linear_cross_entropy (torch >= 2.13)"
    if case.provider == "cce" and importlib.util.find_spec("cut_cross_entropy") is None:
        return "cut_cross_entropy is not installed (pip install --no-deps cut-cross-entropy)"
    if case.provider == "liger":
        if device != "cuda":
            return "Liger-Kernel's fused linear cross-entropy is Triton code for CUDA devices"
        if importlib.util.find_spec("liger_kernel") is None:
            return "liger_kernel is not installed (pip install liger-kernel)"
    if case.provider.startswith("tnops_"):
        from tnops import backends

        name = case.provider.removeprefix("tnops_")
        reason = backends.unavailable_reason(name)
        if reason is None:
            reason = backends.get(name).refuses(torch.device(device), getattr(torch, DTYPES[case.dtype]))
        if reason is None and name == "triton" and backends.interpreting():
            reason = "TRITON_INTERPRET=1: the Triton interpreter is a correctness tool, not a benchmark"
        return reason
    return None


def make_inputs(shape: str, dtype: str, device: str, synonyms: bool):
    """The inputs of every case of ``shape``, identical in every process: ``(hidden [N, E], weight [V, E],
    bias [V], labels [N], table)``, made in float32 on the CPU from seed 0, then cast to ``dtype`` and moved to
    ``device``; all rows masked; ``table`` a random ``SynonymTable`` of 20 synonyms per token (None without)."""
    import torch

    n, width, vocab, _ = SHAPES[shape]
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, width, generator=generator)
    weight = torch.randn(vocab, width, generator=generator) * width**-0.5
    labels = torch.randint(0, vocab, (n,), generator=generator)
    torch_dtype = getattr(torch, DTYPES[dtype])
    leaves = [x.to(device=device, dtype=torch_dtype).requires_grad_() for x in (hidden, weight, torch.zeros(vocab))]
    table = None
    if synonyms:  # row v: v + cumulative gaps in [1, V/20), so 20 distinct ids, none of them v (fast at V=250k)
        import tnops

        gaps = torch.randint(1, max(2, vocab // SYNONYMS_PER_TOKEN), (vocab, SYNONYMS_PER_TOKEN), generator=generator)
        ids = (torch.arange(vocab)[:, None] + gaps.cumsum(1)) % vocab
        offsets = (torch.arange(vocab + 1) * SYNONYMS_PER_TOKEN).int()
        table = tnops.SynonymTable(offsets, ids.sort(1).values.reshape(-1).int()).to(device)
    return (*leaves, labels.to(device), table)


def true_negative_kwargs(table) -> dict:
    """Keyword arguments of ``tnops.linear_mlm_loss`` for the ``tn`` objective."""
    return dict(synonyms=table, prediction="sample", seed=SEED, sr_weight=SR_WEIGHT)


def eager_true_negative(hidden, weight, bias, labels, table):
    """The ``tn`` objective as plain PyTorch (materialised logits, ``torch.rand`` Gumbel noise).

    Returns ``(loss, predictions [N])``."""
    import torch
    import torch.nn.functional as F

    from tnops import reference

    logits = F.linear(hidden, weight, bias)
    with torch.no_grad():
        u = torch.rand(logits.shape, device=logits.device).clamp_(2.0**-24, 1 - 2.0**-24)
        predictions = (logits.float() - torch.log(-torch.log(u))).argmax(-1)
    out = reference.mlm_loss(logits, labels, synonyms=table, sr_weight=SR_WEIGHT, sr_embedding=weight,
                             predictions=predictions)
    return out.loss, predictions


def eager_cross_entropy(hidden, weight, bias, labels):
    """Plain cross-entropy as plain PyTorch: ``[N, V]`` logits, upcast to float32."""
    import torch.nn.functional as F

    return F.cross_entropy(F.linear(hidden, weight, bias).float(), labels)


def loss_function(case: Case, inputs, device: str):
    """A zero-argument callable computing ``case``'s loss on ``inputs`` -> ``(loss, predictions [N] or None)``; the
    floor's returns None (it computes the matmuls only).  ``unavailable(case, device)`` must be None."""
    import torch
    import torch.nn.functional as F

    hidden, weight, bias, labels, table = inputs
    if case.provider == "floor":
        h, w, b = hidden.detach(), weight.detach(), bias.detach()

        def floor():
            z = torch.addmm(b, h, w.T)
            if case.mode == "fwdbwd":
                z @ w, z.T @ h  # dh and dW of the logits' gradient (here the logits themselves stand in for it)
        return floor
    tn = case.objective == "tn"
    if case.provider in ("eager", "compiled"):
        if tn:
            fn = lambda: eager_true_negative(hidden, weight, bias, labels, table)
        else:
            fn = lambda: (eager_cross_entropy(hidden, weight, bias, labels), None)
        return torch.compile(fn) if case.provider == "compiled" else fn
    if case.provider == "linear_ce":
        options = torch.nn.LinearCrossEntropyOptions()
        return lambda: (F.linear_cross_entropy(hidden, weight, labels, linear_bias=bias, options=options), None)
    if case.provider == "cce":  # no bias argument: the inputs' bias is zero, so the loss is the same
        from cut_cross_entropy import linear_cross_entropy

        impl = "cce" if device == "cuda" else "torch_compile"
        return lambda: (linear_cross_entropy(hidden, weight, labels, impl=impl, filter_eps=None), None)
    if case.provider == "liger":
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()
        return lambda: (liger(weight, hidden, labels, bias), None)
    import tnops

    backend = case.provider.removeprefix("tnops_")
    kwargs = true_negative_kwargs(table) if tn else {}

    def tnops_loss():
        out = tnops.linear_mlm_loss(hidden, weight, labels, bias=bias, backend=backend, **kwargs)
        return out.loss, (out.predictions if tn else None)
    return tnops_loss
