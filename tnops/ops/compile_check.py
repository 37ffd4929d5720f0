"""Compile every Triton kernel of tnops for a GPU target without a GPU, so CI sees GPU compile errors.

    python -m tnops.ops.compile_check                 # Hopper: GPUTarget("cuda", 90, 32), 227 KiB per block
    python -m tnops.ops.compile_check --arch 75       # Turing (T4): 64 KiB per block, no bfloat16
    python -m tnops.ops.compile_check --arch 80 86 89 --max-spill 0   # several targets; fail on any spill
    python -m tnops.ops.compile_check --arch 86 --kernels _mlm_bwd     # only the kernels whose name has this

Runs with ``TRITON_INTERPRET`` unset (the interpreter replaces kernels by Python functions).  Each kernel is
built for every dtype the target computes (``config.gpu_refusal``: bfloat16 is skipped on sm_75, by name) and its
main constexpr variants, at the tiles ``head_config`` picks for the ELECTRA-base generator shape on that target
(``config.Target.known(arch)``: its shared memory per block and tiles); a failure prints the Triton error.  A
kernel FAILS when its shared memory exceeds the target's limit (the launch would raise ``OutOfResources``), and
with ``--max-spill`` when ``ptxas -v`` reports more bytes of registers spilled to local memory: a spill in a hot
kernel is a slowdown that can be seen here without a GPU.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time

TYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
SHAPE = (20224, 30522, 768)  # ELECTRA-base generator rows, vocabulary, width: the tiles CI compiles


def _variants(target):
    """``(name, kernel, signature, constexprs, num_warps, num_stages)`` of every kernel variant CI builds for
    ``target`` (a ``config.Target``), dtypes the target cannot compute left out."""
    import torch

    from tnops.ops import mlm_head_kernels, rtd_kernels, sr_kernels
    from tnops.ops.config import gpu_refusal, head_config
    from tnops.ops.mlm_head import SEARCH_STEPS

    types = {name: dtype for name, dtype in TYPES.items() if gpu_refusal(target, getattr(torch, name)) is None}
    configs = {dtype: head_config(*SHAPE, dtype=getattr(torch, name), target=target) for name, dtype in types.items()}
    logit_configs = {dtype: head_config(*SHAPE, dtype=getattr(torch, name), logits=True, target=target)
                     for name, dtype in types.items()}

    def head_args(dtype: str) -> dict:  # the arguments the forward and backward LM-head kernels share
        return {"h_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "b_ptr": f"*{dtype}", "labels_ptr": "*i64",
                "order_ptr": "*i64", "tiles_ptr": "*i32", "flags_ptr": "*i32", "N": "i32", "V": "i32", "E": "i32",
                "stride_hn": "i32", "stride_he": "i32", "stride_wv": "i32", "stride_we": "i32"}
    # Every dtype with every feature on, and with every feature off: the branches that change codegen; for the
    # fused head (weight) and for given logits (mlm_loss: no weight, no bias).
    # And the vocabulary-parallel variant (SHARDED: noise of a block starting at any id) with every feature on.
    all_on_or_off = [(True, True, True, True, False), (True, False, False, False, False),
                     (False, False, True, True, False), (False, False, False, False, False),
                     (True, True, True, True, True)]
    for dtype, (weight, bias, sample, disallow, sharded) in itertools.product(types.values(), all_on_or_off):
        cfg = configs[dtype] if weight else logit_configs[dtype]
        sig = dict(head_args(dtype), row_ids_ptr="*i64", part_max_ptr="*fp32", part_other_ptr="*fp32",
                   part_gold_ptr="*fp32", part_best_ptr="*fp32", part_zsum_ptr="*fp32", part_idx_ptr="*i32",
                   seed="i64", temperature="fp32", ignore_index="i32", v_per_split="i32", v_offset="i32",
                   V_all="i32")
        const = dict(HAS_WEIGHT=weight, HAS_BIAS=bias, SAMPLE=sample, DISALLOW=disallow, HAS_ROW_IDS=sample,
                     COUNT_TILES=False, SHARDED=sharded, BLOCK_N=cfg.block_n, BLOCK_V=cfg.block_v, BLOCK_E=cfg.block_e,
                     DOT_PRECISION="ieee" if dtype == "fp32" else "tf32")
        if not weight:  # the logits' row stride is V = 30522: not a multiple of 16
            sig = dict(sig, stride_hn="i32 unaligned")
        yield f"_mlm_fwd_kernel[{dtype}, {'bias=' + str(bias) if weight else 'logits'}, sample={sample}, " \
            f"disallow={disallow}{', sharded' if sharded else ''}]", mlm_head_kernels._mlm_fwd_kernel, sig, const, \
            cfg.num_warps, cfg.num_stages
    for dtype, (table, sr) in itertools.product(types.values(), [(True, True), (False, False)]):
        cfg = configs[dtype]
        sig = {n: "*fp32" for n in ("part_max_ptr", "part_other_ptr", "part_gold_ptr", "part_best_ptr",
                                    "part_zsum_ptr")}
        sig.update({"part_idx_ptr": "*i32", "labels_ptr": "*i64", "offsets_ptr": "*i32", "syn_ids_ptr": "*i32",
                    "emb_ptr": f"*{dtype}", "lse_ptr": "*fp32", "nll_ptr": "*fp32", "zmean_ptr": "*fp32",
                    "complement_ptr": "*fp32", "pred_ptr": "*i64",
                    "corrected_ptr": "*i8", "sr_ptr": "*fp32", "sr_dot_ptr": "*fp32", "sr_gold_sq_ptr": "*fp32",
                    "sr_pred_sq_ptr": "*fp32", "flags_ptr": "*i32", "N": "i32", "V": "i32", "NNZ": "i32",
                    "SPLITS": "i32", "v_per_split": "i32", "E_SR": "i32", "stride_ev": "i32",
                    "stride_ee": "i32", "ignore_index": "i32", "cos_eps_sq": "fp32"})
        const = dict(HAS_TABLE=table, SEARCH_STEPS=SEARCH_STEPS, HAS_SR=sr, BLOCK_N=cfg.row_block_n,
                     BLOCK_E=cfg.row_block_e)
        yield f"_mlm_combine_kernel[{dtype}, table={table}, sr={sr}]", mlm_head_kernels._mlm_combine_kernel, sig, \
            const, 4, 3
    halves = [dtype for dtype in ("bf16", "fp16") if dtype in types.values()]  # the first with bias
    backward = [("fp32", True)] + [(dtype, dtype == halves[0]) for dtype in halves] + [(dtype, None) for dtype in
                                                                                         types.values()]
    backward += [(dtype, "sharded") for dtype in ("fp32", *halves[:1])]  # a vocabulary block, with bias
    for dtype, bias in backward:  # bias None: given logits, d_logits in their dtype
        cfg = configs[dtype] if bias is not None else logit_configs[dtype]
        sig = dict(head_args(dtype), lse_ptr="*fp32", complement_ptr="*fp32", coef_ptr="*fp32",
                   dh_ptr="*fp32" if bias is not None else f"*{dtype}", dw_ptr="*fp32", db_ptr="*fp32",
                   ignore_index="i32", V_all="i32")
        const = dict(HAS_WEIGHT=bias is not None, HAS_BIAS=bool(bias), HAS_COMPLEMENT=True,
                     SHARDED=bias == "sharded", WANT_DH=True,
                     WANT_DW=bias is not None, WANT_DB=bool(bias), COUNT_TILES=False, BLOCK_N=cfg.bwd_block_n,
                     BLOCK_V=cfg.bwd_block_v, BLOCK_E=cfg.bwd_block_e, GROUP_N=cfg.bwd_group_n,
                     DOT_PRECISION="ieee" if dtype == "fp32" else "tf32")
        if bias is None:
            sig = dict(sig, stride_hn="i32 unaligned")
        name = f"_mlm_bwd_kernel[{dtype}, {'logits' if bias is None else f'bias={bool(bias)}'}" \
            f"{', sharded' if bias == 'sharded' else ''}]"
        yield name, mlm_head_kernels._mlm_bwd_kernel, sig, const, cfg.bwd_num_warps, cfg.num_stages
    for dtype in types.values():
        cfg = configs[dtype]
        sig = {"emb_ptr": f"*{dtype}", "labels_ptr": "*i64", "pred_ptr": "*i64", "coef_ptr": "*fp32",
               "dot_ptr": "*fp32", "gold_sq_ptr": "*fp32", "pred_sq_ptr": "*fp32", "demb_ptr": "*fp32",
               "flags_ptr": "*i32", "N": "i32", "V": "i32", "E": "i32", "stride_ev": "i32", "stride_ee": "i32",
               "ignore_index": "i32", "cos_eps_sq": "fp32"}
        const = dict(BLOCK_N=cfg.row_block_n, BLOCK_E=cfg.row_block_e)
        yield f"_sr_bwd_kernel[{dtype}]", sr_kernels._sr_bwd_kernel, sig, const, 4, 3
    for dtype, (mask, corrected) in itertools.product(types.values(), [(True, True), (False, False)]):
        sig = {"logits_ptr": f"*{dtype}", "corrupted_ptr": "*i64", "original_ptr": "*i64", "mask_ptr": "*i64",
               "corrected_ptr": "*u8", "loss_ptr": "*fp32", "grad_ptr": "*fp32", "N": "i32"}
        const = dict(HAS_MASK=mask, HAS_CORRECTED=corrected, BLOCK=rtd_kernels.BLOCK)
        yield f"_rtd_kernel[{dtype}, mask={mask}, corrected={corrected}]", rtd_kernels._rtd_kernel, sig, const, 4, 3


# Specialisations the JIT makes at launch for contiguous inputs at the ELECTRA shapes: unit strides become
# constants, pointers and these sizes are multiples of 16.  Compiling with them gives the binary (vector
# loads, vector atomics) whose registers and spills matter.
UNIT_STRIDES = ("stride_he", "stride_we", "stride_ee")
DIVISIBLE_BY_16 = ("E", "E_SR", "stride_hn", "stride_wv", "stride_ev")


def as_launched(fn, sig: dict, const: dict) -> tuple[dict, dict, dict]:
    """``(signature, constexprs, attrs)`` of ``ASTSource`` for the kernel as the JIT specialises it at launch."""
    const = dict(const, **{name: 1 for name in UNIT_STRIDES if name in sig})
    unaligned = {name for name, kind in sig.items() if kind.endswith(" unaligned")}  # known not multiples of 16
    sig = {name: ("constexpr" if name in const else kind.split()[0]) for name, kind in {**sig, **const}.items()}
    aligned = [name for name, kind in sig.items()
               if kind.startswith("*") or (name in DIVISIBLE_BY_16 and name not in unaligned)]
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
    return sig, const, attrs


def register_usage(ptx: str, arch: int) -> tuple[int, int] | None:
    """``(registers, spilled bytes)`` that Triton's own ptxas reports for ``ptx``, or None if it cannot tell."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

        ptxas, gpu = get_ptxas(arch).path, sm_arch_from_capability(arch)
    except Exception:  # a Triton without these helpers: report nothing rather than fail
        return None
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "kernel.ptx")
        with open(source, "w") as f:
            f.write(ptx)
        run = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", source, "-o", os.path.join(tmp, "kernel.cubin")],
                             capture_output=True, text=True)
    registers = re.search(r"Used (\d+) registers", run.stderr)
    spills = re.search(r"(\d+) bytes spill stores", run.stderr)
    if run.returncode or not registers or not spills:
        return None
    return int(registers.group(1)), int(spills.group(1))


def check_target(arch: int, warp_size: int = 32, shared_limit: int | None = None, max_spill: int | None = None,
                 kernels: str | None = None) -> int:
    """Compile every kernel variant for ``cuda:<arch>``, print one line each; the number that failed."""
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tnops.ops.config import Target, gpu_refusal, tile_capability

    target = Target.known(arch)
    limit = shared_limit if shared_limit is not None else target.smem
    print(f"cuda:{arch}: {limit // 1024} KiB shared memory per block, the tiles of sm_{tile_capability(target)}",
          flush=True)
    for name in TYPES:
        reason = gpu_refusal(target, getattr(torch, name))
        if reason is not None:
            print(f"skip  {name}: {reason}", flush=True)
    gpu = GPUTarget("cuda", arch, warp_size)
    failures = 0
    for name, fn, sig, const, warps, stages in _variants(target):
        if kernels and kernels not in name:
            continue
        start = time.perf_counter()
        try:
            signature, constexprs, attrs = as_launched(fn, sig, const)
            compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                                      target=gpu, options={"num_warps": warps, "num_stages": stages})
            ptx = compiled.asm.get("ptx", "")
            note = "wgmma" if "wgmma" in ptx else ("mma" if "mma" in ptx else "")
            if re.search(r"red\.global\.\w+\.relaxed\.add\.v[24]\.f32", ptx):
                note += " red.v4" if ".v4.f32" in ptx else " red.v2"  # vectorised fire-and-forget atomics
            elif "atom.global" in ptx and ".add.f32" in ptx:
                note += " atom"  # value-returning (and possibly fenced) atomics: slower
            shared = compiled.metadata.shared
            if shared > limit:  # the launch would fail with OutOfResources on the device
                raise RuntimeError(f"needs {shared} bytes ({shared / 1024:.1f} KiB) of shared memory per block, "
                                   f"sm_{arch} has {limit} ({limit // 1024} KiB)")
            usage = register_usage(ptx, arch)
            regs = "regs   ?  spill    ?" if usage is None else f"regs {usage[0]:3d}  spill {usage[1]:4d}"
            if usage is not None and max_spill is not None and usage[1] > max_spill:
                raise RuntimeError(f"spills {usage[1]} bytes of registers (--max-spill {max_spill}): {regs}")
            seconds = time.perf_counter() - start
            print(f"ok    {name:60s} {seconds:5.1f} s  smem {shared / 1024:5.1f} KiB  {regs}  {note}", flush=True)
        except Exception as error:  # report every kernel, then fail
            failures += 1
            print(f"FAIL  {name}\n{error}", flush=True)
    print(f"{failures} failed" if failures else "all kernels compiled", f"for cuda:{arch}", flush=True)
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90],
                        help="CUDA compute capabilities, e.g. 75 80 86 89 90 (default: 90, Hopper)")
    parser.add_argument("--warp-size", type=int, default=32)
    parser.add_argument("--shared-limit", type=int, default=None,
                        help="bytes of shared memory per block (default: the target's, config.SHARED_MEMORY)")
    parser.add_argument("--max-spill", type=int, default=None,
                        help="fail when ptxas spills more than this many bytes of registers in a kernel")
    parser.add_argument("--kernels", default=None, help="only the kernel variants whose name contains this")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter cannot compile kernels")
    failed = [arch for arch in args.arch
              if check_target(arch, args.warp_size, args.shared_limit, args.max_spill, args.kernels)]
    if len(args.arch) > 1:
        print(f"FAILED for {', '.join(f'cuda:{a}' for a in failed)}" if failed else
              f"all targets compiled: {', '.join(f'cuda:{a}' for a in args.arch)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
