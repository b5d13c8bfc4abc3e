"""'No float in online adaptation', checked two ways after one integer step of each method
(back-propagation, forward gradients, mutating masks), of the 16-bit widths (intsr.precision)
and, for blind mode, the kernel estimate that precedes it:
1. the LLVM IR of every compiled Numba function outside intsr/floatpath has no floating-point
   instruction or type;
2. the Python glue between kernels (every intsr frame outside floatpath) never holds or returns
   a float array (sys.setprofile sees every call and return with its locals)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from intsr.arch import layer_shapes
from intsr.blind import estimate_jpeg, estimate_noise, estimator, grid_prior
from intsr.floatpath.convert import kernel_to_fixed, lr_to_fixed, weights_to_int
from intsr.io import jpeg_roundtrip
from intsr.kernels.dispatch import PATH
from intsr.model import IntNet
from intsr.online import estimate_kernel, make_learner, make_training_pair
from intsr.quant import QTensor

from helpers import host_runs

# LLVM names (%x, @x, !x, quoted or not) and strings are dropped before the search, so a
# variable called `half` or a symbol mentioning `float` does not count.
IR_NAMES = r'[%@!](?:"[^"]*"|[-\w.$]+)|c"[^"]*"|;.*'
FLOAT_IR = r"\b(fadd|fsub|fmul|fdiv|frem|fneg|fcmp|sitofp|uitofp|fptosi|fptoui|fpext|fptrunc|" \
           r"double|float|half|bfloat|x86_fp80|fp128)\b"


def _random_setup(rng, size=16):
    weights = [rng.normal(0, 0.05, s) for s in layer_shapes()]
    masks = [rng.random(s[3]) < 0.6 for s in layer_shapes()]
    masks[-1][:] = True
    lr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    k = np.outer(np.hanning(7)[1:-1], np.hanning(7)[1:-1])
    return weights, masks, lr, k


_SCRIPT = textwrap.dedent("""
    import importlib, json, pkgutil, re, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import intsr, intsr.kernels
    from test_no_float import FLOAT_IR, IR_NAMES, _random_setup
    from intsr.floatpath.convert import KERNEL_BITS, kernel_to_fixed, lr_to_fixed, weights_to_int
    from intsr.model import IntNet
    from intsr.online import make_learner, make_training_pair
    from numba.core.registry import CPUDispatcher

    weights, masks, lr, k = _random_setup(np.random.default_rng(0))
    for mode in ("ours", "standard"):
        net = IntNet(weights_to_int(weights, mode), masks, mode=mode)
        inp, target = make_training_pair(lr, kernel_to_fixed(k), 2)
        net.step(inp, target, *lr_to_fixed(0.01, target.size))
        net.predict(inp)
    # a son degraded like a noisy JPEG (issue 28): the noise kernel, then the JPEG round trip
    make_training_pair(lr, kernel_to_fixed(k), 2, noise_q8=768, jpeg=(80, 2), seed=1)
    from intsr.precision import uniform
    net = IntNet(weights_to_int(weights), masks, precision=uniform(16, 16, 16, 16))
    net.step(inp, target, *lr_to_fixed(0.01, target.size))
    net.predict(inp)
    for method in ("forward", "mest"):
        net = IntNet(weights_to_int(weights), masks)
        make_learner(net, method, options={{"every": 1}} if method == "mest" else {{}}).step(
            inp, target, *lr_to_fixed(0.01, target.size))
    found, bad = [], []
    modules = ["intsr.model", "intsr.online", "intsr.quant", "intsr.forwardgrad", "intsr.mest"] + [
        "intsr.kernels." + m.name for m in pkgutil.iter_modules(intsr.kernels.__path__)]
    for name in modules:
        mod = importlib.import_module(name)
        for attr, obj in vars(mod).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == name:
                for sig in obj.signatures:
                    ir = obj.inspect_llvm(sig)
                    found.append(name + "." + attr)
                    hits = sorted(set(re.findall(FLOAT_IR, re.sub(IR_NAMES, " ", ir))))
                    if hits:
                        bad.append([name + "." + attr, str(sig), hits])
    # Positive control: the same search does see a float in a function that has one.
    from numba import njit
    control = njit(lambda a: a.sum() * 0.5)
    control(np.arange(3))
    ctrl = re.findall(FLOAT_IR, re.sub(IR_NAMES, " ", control.inspect_llvm(control.signatures[0])))
    print(json.dumps({{"found": sorted(set(found)), "bad": bad, "control": sorted(set(ctrl))}}))
""")


PORTABLE = ["gemm_x8s8.gemm_x8s8", "im2col.im2col_3x3", "gemm_x8s8._wgrad_chunks"]
TILE = ["igemm_u8s8._conv_rows", "igemm_u8s8._wgrad_tasks", "igemm_u8s8._pad_x8",
        "igemm_u8s8._flat_max", "igemm_u8s8._pack_w", "igemm_u8s8._pack_grad",
        "requant.requant_relu_pad_u8"]


@pytest.mark.slow
@pytest.mark.parametrize("path", [
    "portable",
    pytest.param("avx2", marks=pytest.mark.skipif(not host_runs("haswell"), reason="no AVX2")),
    pytest.param("avxvnni", marks=pytest.mark.skipif(not host_runs("alderlake"),
                                                     reason="no AVX-VNNI")),
    pytest.param("vnni", marks=pytest.mark.skipif(PATH != "vnni", reason="CPU without VNNI"))])
def test_llvm_ir_of_online_kernels_has_no_float(tmp_path, path):
    """Each kernel path: portable, the AVX2 and AVX-VNNI tiles (Numba compiling for haswell /
    alderlake, where this CPU can run them) and the AVX-512 VNNI tile where this CPU has it."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))  # compile afresh: IR is available
    env.pop("INTSR_NO_VNNI", None)
    if path == "portable":
        env["INTSR_NO_VNNI"] = "1"
    elif path in ("avx2", "avxvnni"):
        env.update(NUMBA_CPU_NAME="haswell" if path == "avx2" else "alderlake",
                   NUMBA_CPU_FEATURES="")
    res = subprocess.run([sys.executable, "-c", _SCRIPT.format(tests=tests)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(res.stdout.strip().splitlines()[-1])
    # The check means something only if it saw the kernels of one step.
    for k in (PORTABLE if path == "portable" else TILE) + [
            "requant.requant_s32", "requant.max_abs_s32", "elementwise.l1_grad_s64",
            "dispatch._agrad_weights",
            "elementwise.pixels_s64", "update.sgd_update_s32",
            "resample._degrade_u8", "resample._resample_rows_u8", "noise_u8.add_noise_u8",
            "planes_x16.combine_w16_s32"]:
        assert "intsr.kernels." + k in data["found"], k
    assert data["bad"] == []
    assert {"double", "fmul", "sitofp"} <= set(data["control"])


@pytest.mark.slow
def test_python_glue_handles_no_float_array():
    weights, masks, lr, k = _random_setup(np.random.default_rng(1))
    net = IntNet(weights_to_int(weights), masks)  # boundary: float -> int, before tracing
    from intsr.precision import uniform
    wide = IntNet(weights_to_int(weights), masks, precision=uniform(16, 16, 16, 16))
    # the other learners, built at the boundary (mest's swap share is a user's float)
    forward = make_learner(IntNet(weights_to_int(weights), masks), "forward", seed=3,
                           options={"layers": "all"})
    mest = make_learner(IntNet(weights_to_int(weights), masks), "mest", seed=3,
                        options={"every": 1})
    k_fixed, (mult, shift) = kernel_to_fixed(k), lr_to_fixed(0.01, 16 * 16 * 3)
    estimator(4)  # boundary: the estimator's weights and the kernel bank, before tracing
    pkg = os.path.dirname(os.path.abspath(sys.modules["intsr"].__file__))
    floatpath = os.path.join(pkg, "floatpath")
    seen, offenders = set(), []

    def floats_in(obj, depth=0):
        if isinstance(obj, np.ndarray):
            return obj.dtype.kind in "fc"
        if isinstance(obj, QTensor):  # may be half-built inside __init__
            v = getattr(obj, "value", None)
            return v is not None and v.dtype.kind in "fc"
        if isinstance(obj, float):
            return True
        if depth < 2 and isinstance(obj, (list, tuple)):
            return any(floats_in(o, depth + 1) for o in obj)
        return False

    def prof(frame, event, arg):
        fn = frame.f_code.co_filename
        if not fn.startswith(pkg) or fn.startswith(floatpath):
            return
        seen.add(frame.f_code.co_name)
        values = list(frame.f_locals.items())
        if event == "return":
            values.append(("<return>", arg))
        for name, v in values:
            if floats_in(v):
                offenders.append((frame.f_code.co_name, name, type(v).__name__))

    sys.setprofile(prof)
    try:
        inp, target = make_training_pair(lr, k_fixed, 2)
        net.step(inp, target, mult, shift)
        net.predict(inp)
        # blind mode: estimate the kernel and the noise, make the pair with them (the son
        # noisy and JPEG-compressed like its image), one step
        est = estimate_kernel(lr, scale=4)
        noise_q8 = max(estimate_noise(lr), 256)
        grid, _ = grid_prior(lr)
        # a PNG that was a JPEG (a 16 px noise image need not read as one: traced either way)
        jpeg = estimate_jpeg(jpeg_roundtrip(lr, 75, 2)) or (75, 2)
        inp, target = make_training_pair(lr, est.k_fixed, 4, grid=grid, noise_q8=noise_q8,
                                         jpeg=jpeg)
        net.step(inp, target, mult, shift)
        # every tensor 16-bit (byte planes), forward gradients, masks mutating
        wide.step(inp, target, mult, shift)
        wide.predict(inp)
        forward.step(inp, target, mult, shift)
        mest.step(inp, target, mult, shift)
    finally:
        sys.setprofile(None)
    assert {"forward", "backward", "_update_layer", "loss_grad", "requantize", "_weight_grad",
            "degrade_u8", "bicubic_upsample_u8", "conv3x3", "agrad3x3", "wgrad3x3",
            "wgrad3x3_u8s8", "conv3x3_u8s8",
            "estimate_kernel", "estimate", "predict", "features", "loss", "_perturbed",
            "direction", "observe", "mutate", "_draw", "conv3x3_x16", "wgrad3x3_x16",
            "_data_planes", "_int8_planes", "estimate_noise", "jpeg_roundtrip",
            "estimate_jpeg", "estimate_chroma_noise", "grid_prior", "_quiet_blocks"} <= seen
    assert offenders == []
