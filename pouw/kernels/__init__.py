"""Fast kernels of the noisy-transcript product, bit-identical to pouw/transcript.py's reference.

* :mod:`pouw.kernels.cpu`: numba kernels (running sums + per-chunk mix, tile lanes, sparse noise),
  with a pure torch/numpy fallback when numba cannot be imported;
* :mod:`pouw.kernels.triton_gpu`: the Triton kernel of the GPU path (int8 ``tl.dot``, the mix in
  the epilogue, tile lanes in the kernel), checked against the CPU reference under
  ``TRITON_INTERPRET=1``.

Nothing here is normative: docs/protocol.md Part IV and the reference functions are.
"""
