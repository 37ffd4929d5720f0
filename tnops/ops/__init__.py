"""The Triton kernels of tnops, a pair of files per op: ``<op>_kernels.py`` holds the ``@triton.jit`` kernels,
``<op>.py`` their launchers (argument checks, tiles, grids, output buffers).

``mlm_head_kernels.py`` / ``mlm_head.py``
    the fused LM head: logits tile by tile, MLM cross-entropy, argmax or Gumbel-max prediction, hard
    correction through the CSR synonym table, SR cosine; the backward that recomputes the logits.
``sr_kernels.py``
    the SR backward (its forward, the cosine terms, is part of the head's combine kernel).
``rtd_kernels.py`` / ``rtd.py``
    ELECTRA's replaced-token-detection BCE with the hard-correction label flip, loss and gradient in one pass.
``config.py``
    tiles and warps (``head_config``) and what the kernels can compute (``refusal``, ``check_inputs``).
``compile_check.py``
    ``python -m tnops.ops.compile_check``: builds every kernel for a GPU target without a GPU, reports
    registers and spills.

Production reaches the launchers only through ``tnops/backends/triton.py`` (behind the ``tnops::`` custom ops).
Nothing is imported here: importing ``tnops.ops.config`` must work without Triton installed.
"""
