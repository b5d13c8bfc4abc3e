"""What each `intsr` command does, on files: read and validate the inputs, run the library,
write every output atomically. The CLI (cli/main.py) only parses options, shows progress and
turns errors into one line; these functions hold the policy, so scripts get the same behaviour.
"""
import json
from importlib import resources
from pathlib import Path

import numpy as np

from intsr import cost, weights as wfiles
from intsr.arch import CHANNELS, num_weights
from intsr.io import (InputError, atomic_write, check_output_path, read_image, read_kernel,
                      write_image)
from intsr.kernels.resample import bicubic_upsample_u8


def example_paths():
    """The bundled sample: a small LR image and its blur kernel (x4)."""
    base = resources.files("intsr") / "data"
    return Path(str(base / "example_lr.png")), Path(str(base / "example_kernel.npy"))


def check_report_path(path):
    if not Path(path).parent.resolve().is_dir():
        raise InputError(f"{path}: report folder does not exist")


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text), binary=False)


def _write_sr(out, result, alpha, scale):
    # An alpha plane is not super-resolved, only resized with the image (bicubic).
    if alpha is not None:
        alpha = bicubic_upsample_u8(alpha[:, :, None], scale)[:, :, 0]
    write_image(out, result, alpha)


def adapt_file(inp, out, kernel_path, *, scale=4, steps=10, prune=None, weights=None, lr=None,
               report_path=None, progress=None):
    """`intsr adapt`: adapt to the image ``inp`` with its kernel file, write the SR image
    ``out`` and, if asked, a JSON report. Returns the SR image's (width, height)."""
    from intsr.online import adapt

    check_output_path(out)
    if report_path is not None:
        check_report_path(report_path)
    pixels, alpha = read_image(inp)
    kernel = read_kernel(kernel_path)
    report = {"trace_memory": True} if report_path else None
    result = adapt(pixels, kernel, scale=scale, steps=steps, prune=prune, weights=weights, lr=lr,
                   progress=progress, report=report)
    _write_sr(out, result, alpha, scale)
    if report_path is not None:
        report.pop("trace_memory", None)
        report.update(input=str(inp), output=str(out), scale=scale, steps=steps, prune=prune,
                      size=[int(pixels.shape[1]), int(pixels.shape[0])])
        write_text(report_path, json.dumps(report, indent=2))
    return result.shape[1], result.shape[0]


def sr_file(inp, out, *, scale=4, weights=None):
    """`intsr sr`: super-resolve ``inp`` without adaptation. Returns (width, height)."""
    from intsr.online import super_resolve

    check_output_path(out)
    pixels, alpha = read_image(inp)
    result = super_resolve(pixels, scale=scale, weights=weights)
    _write_sr(out, result, alpha, scale)
    return result.shape[1], result.shape[0]


def info_lines(weights_path):
    """`intsr info`: architecture, per-layer Eq. 11 scales, the shipped masks' kept filters."""
    from intsr.quant import dynamic_scale

    w = wfiles.load_weights(weights_path)
    lines = [f"architecture: 8 conv 3x3, channels {'-'.join(map(str, CHANNELS))}, no biases, "
             f"ReLU, global residual; {num_weights():,} weights"]
    for i, layer in enumerate(w, 1):
        lines.append(f"  conv{i}: HWIO {tuple(layer.shape)}  scale (Eq. 11) "
                     f"{dynamic_scale(layer)}  max|w| {float(np.abs(layer).max()):.4g}")
    masks_file = wfiles.WEIGHTS_DIR / wfiles.shipped_config()["masks"]
    if masks_file.is_file():
        for ratio, masks in sorted(wfiles.load_masks(masks_file).items()):
            lines.append(f"  masks {ratio:.2f}: kept filters per layer "
                         f"{[int(m.sum()) for m in masks]}")
    else:
        lines.append("  no shipped masks")
    return lines


def cost_report(size=32, bits_f=8, bits_w=32, prune=None, masks_path=None):
    """`intsr cost`: Eq. 16 in both readings and Eq. 17, per layer and total, as a dict."""
    masks = wfiles.resolve_masks(prune, masks_path)
    rows = cost.layer_channels(masks)
    printed = cost.memory_bits(size, bits_f, bits_w, masks, "printed")
    table5 = cost.memory_bits(size, bits_f, bits_w, masks, "table5")
    eq17 = cost.cost(size, bits_f, masks)
    return {"size": size, "bits_f": bits_f, "bits_w": bits_w, "layers": [
        {"layer": l + 1, "c_in": r[0], "c_out": r[1], "c_in_kept": r[2], "c_out_kept": r[3],
         "memory_kb_printed": p / 8000, "memory_kb_table5": t / 8000, "cost_eq17": c}
        for l, (r, p, t, c) in enumerate(zip(rows, printed, table5, eq17))],
        "memory_kb_printed": sum(printed) / 8000, "memory_kb_table5": sum(table5) / 8000,
        "cost_eq17": sum(eq17)}


def cost_lines(data):
    """cost_report as the text table `intsr cost` prints."""
    lines = [f"h = w = {data['size']}, bits_F = {data['bits_f']}, bits_theta = "
             f"{data['bits_w']}; KB = 1000 bytes",
             "layer  c_in c_out  c~in c~out  Eq.16 printed KB  Eq.16 (k^2, Table 5) KB"
             "        Eq.17"]
    for d in data["layers"]:
        lines.append(f"{d['layer']:5d} {d['c_in']:5d} {d['c_out']:5d} {d['c_in_kept']:5d} "
                     f"{d['c_out_kept']:5d} {d['memory_kb_printed']:17.2f} "
                     f"{d['memory_kb_table5']:24.2f} {d['cost_eq17']:12,d}")
    lines.append(f"total{'':25s} {data['memory_kb_printed']:17.2f} "
                 f"{data['memory_kb_table5']:24.2f} {data['cost_eq17']:12,d}")
    return lines


def eval_dir(hr_dir, kernel_paths, *, scale=4, steps=10, configs=None, prune=None,
             masks_path=None, layerwise=None, weights=None, lr=None, json_path=None,
             md_path=None, progress=None):
    """`intsr eval`: every configuration on every image of ``hr_dir`` under each kernel file;
    writes the JSON records and the Markdown tables if asked. Returns the tables (text)."""
    from intsr import evaluate

    for p in (json_path, md_path):
        if p is not None:
            check_report_path(p)
    w, masks, default_lr = wfiles.load_model(weights, prune, masks_path, layerwise)
    kernels = [(Path(k).stem, read_kernel(k)) for k in kernel_paths]
    records = list(evaluate.evaluate(hr_dir, kernels, weights=w, masks=masks,
                                     lr=lr or default_lr, scale=scale, steps=steps,
                                     configs=configs or evaluate.CONFIGS, progress=progress))
    table = evaluate.tables(records, steps)
    if json_path:
        write_text(json_path, json.dumps({"hr_dir": str(hr_dir), "scale": scale, "steps": steps,
                                          "prune": prune, "masks": masks_path,
                                          "layerwise": layerwise, "records": records},
                                         indent=2))
    if md_path:
        write_text(md_path, table + "\n")
    return table
