"""Compile every Triton kernel of tnops for a GPU target without a GPU, so CI sees GPU compile errors.

    python -m tnops.ops.compile_check            # Hopper: GPUTarget("cuda", 90, 32)
    python -m tnops.ops.compile_check --arch 80  # Ampere
    python -m tnops.ops.compile_check --max-spill 0   # also fail when a kernel spills registers

Runs with ``TRITON_INTERPRET`` unset (the interpreter replaces kernels by Python functions).  Each kernel is
built for every dtype it serves and its main constexpr variants, at the tiles ``head_config`` picks for the
ELECTRA-base generator shape on a GPU; a failure prints the Triton error.  Each line also shows what
``ptxas -v`` reports for the binary (registers, bytes spilled to local memory): a spill in a hot kernel is a
slowdown that can be seen here without a GPU.
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


def _variants():
    """``(name, kernel, signature, constexprs, num_warps)`` of every kernel variant CI builds."""
    import torch

    from tnops.ops import mlm_head_kernels, rtd_kernels, sr_kernels
    from tnops.ops.config import head_config
    from tnops.ops.mlm_head import SEARCH_STEPS

    configs = {dtype: head_config(*SHAPE, dtype=getattr(torch, name)) for name, dtype in TYPES.items()}
    logit_configs = {dtype: head_config(*SHAPE, dtype=getattr(torch, name), logits=True)
                     for name, dtype in TYPES.items()}

    def head_args(dtype: str) -> dict:  # the arguments the forward and backward LM-head kernels share
        return {"h_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "b_ptr": f"*{dtype}", "labels_ptr": "*i64",
                "order_ptr": "*i64", "tiles_ptr": "*i32", "flags_ptr": "*i32", "N": "i32", "V": "i32", "E": "i32",
                "stride_hn": "i32", "stride_he": "i32", "stride_wv": "i32", "stride_we": "i32"}
    # Every dtype with every feature on, and with every feature off: the branches that change codegen; for the
    # fused head (weight) and for given logits (mlm_loss: no weight, no bias).
    all_on_or_off = [(True, True, True, True), (True, False, False, False), (False, False, True, True),
                     (False, False, False, False)]
    for dtype, (weight, bias, sample, disallow) in itertools.product(TYPES.values(), all_on_or_off):
        cfg = configs[dtype] if weight else logit_configs[dtype]
        sig = dict(head_args(dtype), row_ids_ptr="*i64", part_max_ptr="*fp32", part_other_ptr="*fp32",
                   part_gold_ptr="*fp32", part_best_ptr="*fp32", part_zsum_ptr="*fp32", part_idx_ptr="*i32",
                   seed="i64", temperature="fp32", ignore_index="i32", v_per_split="i32")
        const = dict(HAS_WEIGHT=weight, HAS_BIAS=bias, SAMPLE=sample, DISALLOW=disallow, HAS_ROW_IDS=sample,
                     COUNT_TILES=False, BLOCK_N=cfg.block_n, BLOCK_V=cfg.block_v, BLOCK_E=cfg.block_e,
                     DOT_PRECISION="ieee" if dtype == "fp32" else "tf32")
        if not weight:  # the logits' row stride is V = 30522: not a multiple of 16
            sig = dict(sig, stride_hn="i32 unaligned")
        yield f"_mlm_fwd_kernel[{dtype}, {'bias=' + str(bias) if weight else 'logits'}, sample={sample}, " \
            f"disallow={disallow}]", mlm_head_kernels._mlm_fwd_kernel, sig, const, cfg.num_warps
    for dtype, (table, sr) in itertools.product(TYPES.values(), [(True, True), (False, False)]):
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
            const, 4
    backward = [("fp32", True), ("bf16", True), ("fp16", False)] + [(dtype, None) for dtype in TYPES.values()]
    for dtype, bias in backward:  # bias None: given logits, d_logits in their dtype
        cfg = configs[dtype] if bias is not None else logit_configs[dtype]
        sig = dict(head_args(dtype), lse_ptr="*fp32", complement_ptr="*fp32", coef_ptr="*fp32",
                   dh_ptr="*fp32" if bias is not None else f"*{dtype}", dw_ptr="*fp32", db_ptr="*fp32",
                   ignore_index="i32")
        const = dict(HAS_WEIGHT=bias is not None, HAS_BIAS=bool(bias), HAS_COMPLEMENT=True, WANT_DH=True,
                     WANT_DW=bias is not None, WANT_DB=bool(bias), COUNT_TILES=False, BLOCK_N=cfg.bwd_block_n,
                     BLOCK_V=cfg.bwd_block_v, BLOCK_E=cfg.bwd_block_e, GROUP_N=cfg.bwd_group_n,
                     DOT_PRECISION="ieee" if dtype == "fp32" else "tf32")
        if bias is None:
            sig = dict(sig, stride_hn="i32 unaligned")
        name = f"_mlm_bwd_kernel[{dtype}, {'logits' if bias is None else f'bias={bias}'}]"
        yield name, mlm_head_kernels._mlm_bwd_kernel, sig, const, cfg.bwd_num_warps
    for dtype in TYPES.values():
        cfg = configs[dtype]
        sig = {"emb_ptr": f"*{dtype}", "labels_ptr": "*i64", "pred_ptr": "*i64", "coef_ptr": "*fp32",
               "dot_ptr": "*fp32", "gold_sq_ptr": "*fp32", "pred_sq_ptr": "*fp32", "demb_ptr": "*fp32",
               "flags_ptr": "*i32", "N": "i32", "V": "i32", "E": "i32", "stride_ev": "i32", "stride_ee": "i32",
               "ignore_index": "i32", "cos_eps_sq": "fp32"}
        const = dict(BLOCK_N=cfg.row_block_n, BLOCK_E=cfg.row_block_e)
        yield f"_sr_bwd_kernel[{dtype}]", sr_kernels._sr_bwd_kernel, sig, const, 4
    for dtype, (mask, corrected) in itertools.product(TYPES.values(), [(True, True), (False, False)]):
        sig = {"logits_ptr": f"*{dtype}", "corrupted_ptr": "*i64", "original_ptr": "*i64", "mask_ptr": "*i64",
               "corrected_ptr": "*u8", "loss_ptr": "*fp32", "grad_ptr": "*fp32", "N": "i32"}
        const = dict(HAS_MASK=mask, HAS_CORRECTED=corrected, BLOCK=rtd_kernels.BLOCK)
        yield f"_rtd_kernel[{dtype}, mask={mask}, corrected={corrected}]", rtd_kernels._rtd_kernel, sig, const, 4


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for Hopper")
    parser.add_argument("--warp-size", type=int, default=32)
    parser.add_argument("--shared-limit", type=int, default=227 * 1024,
                        help="bytes of shared memory per block on the target (Hopper: 227 KiB)")
    parser.add_argument("--max-spill", type=int, default=None,
                        help="fail when ptxas spills more than this many bytes of registers in a kernel")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter cannot compile kernels")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", args.arch, args.warp_size)
    failures = 0
    for name, fn, sig, const, warps in _variants():
        start = time.perf_counter()
        try:
            signature, constexprs, attrs = as_launched(fn, sig, const)
            compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                                      target=target, options={"num_warps": warps, "num_stages": 3})
            ptx = compiled.asm.get("ptx", "")
            note = "wgmma" if "wgmma" in ptx else ("mma" if "mma" in ptx else "")
            if re.search(r"red\.global\.\w+\.relaxed\.add\.v[24]\.f32", ptx):
                note += " red.v4" if ".v4.f32" in ptx else " red.v2"  # vectorised fire-and-forget atomics
            elif "atom.global" in ptx and ".add.f32" in ptx:
                note += " atom"  # value-returning (and possibly fenced) atomics: slower
            shared = compiled.metadata.shared
            if shared > args.shared_limit:  # the launch would fail with OutOfResources on the device
                raise RuntimeError(f"needs {shared} bytes of shared memory, the target has {args.shared_limit}")
            usage = register_usage(ptx, args.arch)
            regs = "regs   ?  spill    ?" if usage is None else f"regs {usage[0]:3d}  spill {usage[1]:4d}"
            if usage is not None and args.max_spill is not None and usage[1] > args.max_spill:
                raise RuntimeError(f"spills {usage[1]} bytes of registers (--max-spill {args.max_spill}): {regs}")
            seconds = time.perf_counter() - start
            print(f"ok    {name:60s} {seconds:5.1f} s  smem {shared / 1024:5.1f} KiB  {regs}  {note}", flush=True)
        except Exception as error:  # report every kernel, then fail
            failures += 1
            print(f"FAIL  {name}\n{error}", flush=True)
    print(f"{failures} failed" if failures else "all kernels compiled", f"for cuda:{args.arch}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
