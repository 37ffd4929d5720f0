"""The Triton kernels of tnops, a pair of files per op: ``<op>_kernels.py`` holds the ``@triton.jit`` kernels,
``<op>.py`` their launchers (argument checks, tiles, grids, output buffers).

``mlm_head_kernels.py`` / ``mlm_head.py``
    the fused LM head: logits tile by tile, MLM cross-entropy, argmax or Gumbel-max prediction, hard
    correction through the CSR synonym table, SR cosine; the backward that recomputes the logits.
``sr_kernels.py``
    the SR backward (its forward, the cosine terms, is part of the head's combine kernel).
``rtd_kernels.py`` / ``rtd.py``
    ELECTRA's replaced-token-detection BCE with the hard-correction label flip, loss and gradient in one pass.
``vocab_block.py``
    the forward kernel on one block of the vocabulary (``block_statistics``): a rank of the vocabulary-parallel
    loss (``tnops.distributed``); its backward is ``mlm_head_backward(..., v_offset=, vocab_all=)``.
``config.py``
    the GPU as the tiles see it (``Target``: compute capability, shared memory per block), tiles, warps and
    stages per target (``head_config``), what the kernels can compute (``refusal``, ``gpu_refusal``,
    ``check_inputs``) and the device guard of every launcher (``on_inputs_device``).
``compile_check.py``
    ``python -m tnops.ops.compile_check --arch 75 80 86 89 90``: builds every kernel for GPU targets without a
    GPU, reports shared memory, registers and spills, and fails a kernel over the target's shared memory.

Production reaches the launchers only through ``tnops/backends/triton.py`` (behind the ``tnops::`` custom ops).
Nothing is imported here: importing ``tnops.ops.config`` must work without Triton installed.
"""
