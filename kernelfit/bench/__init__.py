"""Benchmarks of kernelfit's exact solve against its peers, on the machine at hand.

``kernelfit bench`` (see :mod:`kernelfit.cli.bench`) is the user-facing entry point. The
package is split by concern:

- :mod:`.machine`: what the machine is (CPU, cores, memory, BLAS/LAPACK, GPU, library
  versions) and what its dense kernels reach (GEMM peaks on CPU and GPU).
- :mod:`.runner`: one measurement per child process (``python -m kernelfit.bench.runner``),
  with a timeout, a memory guard, and crashes (signals) recorded instead of fatal.
- :mod:`.suite`: the whole run (which implementation at which n, memory pre-flight, time
  budget) and the n^3 fit used to extrapolate.
- :mod:`.report`: JSON, markdown and plots of a run.

Nothing is imported or measured at import time.
"""

__all__ = ["machine", "runner", "suite", "report"]
