"""Build script: the Python package, plus the optional native CPU extension (csrc/) once it exists.

Environment flags (flash-attention style):
  TNOPS_SKIP_NATIVE=1   never build the C++ extension (pure-Python install)
  MAX_JOBS=N            cap ninja's parallel compile jobs
"""
import os
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent


def native_extensions():
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    if os.environ.get("TNOPS_SKIP_NATIVE") == "1" or not sources:
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # torch not importable in this build environment: the JIT path serves later
        return [], {}
    ext = CppExtension(
        "tnops._native",
        sources,
        # -ffp-contract=off: no FMA contraction, so log_f32 rounds exactly like the torch ops (csrc/philox.h);
        # -fno-trapping-math lets the row loops' selects vectorise (no effect on results).
        extra_compile_args={"cxx": ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]},
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = native_extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
