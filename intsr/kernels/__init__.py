"""Numba kernels, integers only. One file per family, each with a plain NumPy reference."""
