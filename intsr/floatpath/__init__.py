"""The only float code of intsr, below the engine: boundary conversions (convert.py), the
float32 reference network (network.py), the float Eq. 1 and bicubic (degrade.py) and the
evaluation metrics (metrics.py). Imports nothing from intsr but quant, arch and kernels."""
