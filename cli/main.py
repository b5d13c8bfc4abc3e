"""`intsr` console script (click). Thin: every command parses, calls intsr, reports.

Errors are one line on stderr and a non-zero exit; the output file is written atomically, so a
failure never leaves a partial or clobbered OUT."""
import functools
import json
import sys
import warnings
from importlib import resources
from pathlib import Path

import click

from intsr.io import InputError


def _fail_cleanly(fn):
    """Turn every expected failure into `Error: <one line>` and exit status 1 (click's)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (InputError, ValueError, TypeError, OSError, KeyError, ArithmeticError) as e:
            raise click.ClickException(" ".join(str(e).split()) or type(e).__name__) from None
        except MemoryError:
            raise click.ClickException("out of memory") from None
    return wrapper


def _warn_to_stderr(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {message}", err=True)


@click.group()
@click.version_option(package_name="intsr")
def main():
    """Integer-only on-device adaptation of a super-resolution network."""
    warnings.showwarning = _warn_to_stderr


def example_paths():
    """The bundled sample: a small LR image and its blur kernel (x4)."""
    base = resources.files("intsr") / "data"
    return Path(str(base / "example_lr.png")), Path(str(base / "example_kernel.npy"))


def _run_sr(inp, out, kernel_path, scale, steps, prune, weights, lr, seed, json_path, quiet):
    from intsr.io import check_output_path, read_image, read_kernel
    from intsr.online import adapt

    check_output_path(out)
    if json_path is not None:
        _check_report_path(json_path)
    pixels, alpha = read_image(inp)
    kernel = read_kernel(kernel_path)
    report = {"trace_memory": True} if json_path else None
    show = not quiet and sys.stderr.isatty()
    bar = None
    if show and steps:
        bar = click.progressbar(length=steps, label="adapting", file=sys.stderr)
        bar.__enter__()

    def progress(i, n, loss):
        if bar is not None:
            bar.update(1)
        elif not quiet:
            click.echo(f"step {i}/{n}  L1 {loss:.5f}", err=True)

    try:
        result = adapt(pixels, kernel, scale=scale, steps=steps, prune=prune, weights=weights,
                       lr=lr, seed=seed, progress=progress, report=report)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    _write_result(out, result, alpha, scale, quiet)
    if json_path is not None:
        report.pop("trace_memory", None)
        report.update(input=str(inp), output=str(out), scale=scale, steps=steps, prune=prune,
                      size=[int(pixels.shape[1]), int(pixels.shape[0])])
        _write_text(json_path, json.dumps(report, indent=2))


def _write_result(out, result, alpha, scale, quiet):
    """Write the SR image (alpha, if any, bicubic-upsampled alongside) and say so."""
    from intsr.io import write_image
    from intsr.kernels.resample import bicubic_upsample_u8

    if alpha is not None:
        alpha = bicubic_upsample_u8(alpha[:, :, None], scale)[:, :, 0]
    write_image(out, result, alpha)
    if not quiet:
        click.echo(f"wrote {out} ({result.shape[1]}x{result.shape[0]})", err=True)


def _check_report_path(path):
    if not Path(path).parent.resolve().is_dir():
        raise InputError(f"{path}: report folder does not exist")


def _write_text(path, text):
    """Atomic, like the images: a temporary file in the target folder, then a rename."""
    import os
    import tempfile
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--kernel", "kernel_path", type=click.Path(dir_okay=False),
              help="Blur kernel of the input (.npy, or .mat with 'kernel'/'Kernel').")
@click.option("--example", is_flag=True, help="Adapt the bundled sample; PATHS is just OUT.")
@click.option("--scale", default=4, show_default=True, type=int, help="Upscaling factor.")
@click.option("--steps", default=10, show_default=True, type=int, help="Integer SGD steps.")
@click.option("--prune", type=float, default=None,
              help="Gradient-pruning ratio of a shipped mask (0, 0.27, 0.5, 0.67, 0.85).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Weights file (.npz or PyTorch .pt); default: the shipped weights.")
@click.option("--lr", type=float, default=None, help="Learning rate (default: the weights').")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write a report: per-step L1 loss, seconds per phase, MACs, peak memory.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@_fail_cleanly
def adapt(paths, kernel_path, example, scale, steps, prune, weights, lr, seed, json_path, quiet):
    """Adapt to IN with its blur kernel in integer arithmetic, then write the SR image OUT.

    \b
    intsr adapt IN OUT --kernel K.npy
    intsr adapt --example OUT"""
    if example:
        if len(paths) != 1 or kernel_path is not None:
            raise InputError("with --example give only OUT (the sample brings its own kernel)")
        inp, kernel_path = example_paths()
        out = paths[0]
    else:
        if len(paths) != 2:
            raise InputError("usage: intsr adapt IN OUT --kernel K (or: intsr adapt --example OUT)")
        inp, out = paths
        if kernel_path is None:
            raise InputError("--kernel is required (the blur kernel of the input image)")
    _run_sr(inp, out, kernel_path, scale, steps, prune, weights, lr, seed, json_path, quiet)


@main.command()
@click.argument("inp", metavar="IN", type=click.Path(dir_okay=False))
@click.argument("out", metavar="OUT", type=click.Path(dir_okay=False))
@click.option("--scale", default=4, show_default=True, type=int)
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--quiet", is_flag=True)
@_fail_cleanly
def sr(inp, out, scale, weights, quiet):
    """Super-resolve IN without adaptation (0 steps; no kernel needed)."""
    from intsr.io import check_output_path, read_image
    from intsr.online import super_resolve
    check_output_path(out)
    pixels, alpha = read_image(inp)
    _write_result(out, super_resolve(pixels, scale=scale, weights=weights), alpha, scale, quiet)


@main.command()
@click.argument("weights", type=click.Path(dir_okay=False))
@_fail_cleanly
def info(weights):
    """Architecture, weight scales, and shipped masks with their pruning ratios."""
    import numpy as np
    from intsr.floatpath.weights import load_masks, load_weights
    from intsr.model import CHANNELS, num_weights
    from intsr.online import WEIGHTS_DIR, defaults
    from intsr.quant import dynamic_scale

    w = load_weights(weights)
    click.echo(f"architecture: 8 conv 3x3, channels {'-'.join(map(str, CHANNELS))}, no biases, "
               f"ReLU, global residual; {num_weights():,} weights")
    for i, layer in enumerate(w, 1):
        click.echo(f"  conv{i}: HWIO {tuple(layer.shape)}  scale (Eq. 11) {dynamic_scale(layer)}"
                   f"  max|w| {float(np.abs(layer).max()):.4g}")
    masks_file = WEIGHTS_DIR / defaults()["masks"]
    if masks_file.is_file():
        for ratio, masks in sorted(load_masks(masks_file).items()):
            kept = [int(m.sum()) for m in masks]
            click.echo(f"  masks {ratio:.2f}: kept filters per layer {kept}")
    else:
        click.echo("  no shipped masks")


@main.command("eval")
@click.argument("hr_dir", type=click.Path(file_okay=False))
@click.option("--kernel", "kernels", multiple=True, required=True,
              type=click.Path(dir_okay=False), help="Evaluation kernel (repeatable).")
@click.option("--scale", default=4, show_default=True, type=int)
@click.option("--steps", default=10, show_default=True, type=int)
@click.option("--config", "configs", multiple=True,
              help="Configurations to run (repeatable; default: all).")
@click.option("--prune", type=float, default=None, help="Shipped mask ratio for every config.")
@click.option("--masks", "masks_path", type=click.Path(dir_okay=False), default=None,
              help="Masks .npz to take the --prune ratio from (default: the shipped one).")
@click.option("--layerwise", type=int, default=None,
              help="Layer-wise baseline (Table 6): freeze the first N layers instead.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default=None)
@click.option("--quiet", is_flag=True)
@_fail_cleanly
def evaluate_cmd(hr_dir, kernels, scale, steps, configs, prune, masks_path, layerwise, weights, lr,
                 json_path, md_path, quiet):
    """Adapt and score every image of HR_DIR under each kernel (Eq. 1 LR, Y-PSNR)."""
    from intsr.floatpath.evaluate import CONFIGS, detail_table, evaluate, load_hr, summary_table
    from intsr.io import read_kernel
    from intsr.online import load_model_files

    configs = configs or CONFIGS
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        raise InputError(f"unknown config {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    if layerwise is not None and (prune is not None or masks_path is not None):
        raise InputError("--prune/--masks and --layerwise are two kinds of masks; give one")
    w, masks, default_lr = load_model_files(weights, prune)
    if masks_path is not None:
        from intsr.online import select_masks
        masks = select_masks(0.0 if prune is None else prune, masks_path)
    if layerwise is not None:
        from intsr.pruning import layerwise_masks
        masks = layerwise_masks(layerwise)
    ks = [(Path(k).stem, read_kernel(k)) for k in kernels]
    n_images = len(load_hr(hr_dir, scale))
    total = n_images * len(ks) * len(configs)
    records = []
    with click.progressbar(length=total, label="evaluating", file=sys.stderr,
                           show_pos=True) as bar:
        for rec in evaluate(hr_dir, ks, weights=w, masks=masks, lr=lr or default_lr,
                            scale=scale, steps=steps, configs=configs):
            records.append(rec)
            if not quiet:
                bar.update(1)
    table = summary_table(records, steps) + "\n\n" + detail_table(records, steps)
    click.echo(table)
    if json_path:
        _write_text(json_path, json.dumps({"hr_dir": str(hr_dir), "scale": scale, "steps": steps,
                                           "prune": prune, "masks": masks_path,
                                           "layerwise": layerwise,
                                           "records": records}, indent=2))
    if md_path:
        _write_text(md_path, table + "\n")


@main.command("cost")
@click.option("--size", default=32, show_default=True, type=int, help="Feature map h = w.")
@click.option("--bits-f", default=8, show_default=True, type=int, help="Activation bits.")
@click.option("--bits-w", default=32, show_default=True, type=int, help="Weight bits.")
@click.option("--prune", type=float, default=None, help="Shipped mask ratio.")
@click.option("--masks", "masks_path", type=click.Path(dir_okay=False), default=None,
              help="Masks .npz (keys p{pct}_l{l}); with --prune picks that ratio.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_fail_cleanly
def cost_cmd(size, bits_f, bits_w, prune, masks_path, as_json):
    """Eq. 16 (memory) and Eq. 17 (cost) of back-propagation, per layer and total."""
    from intsr import cost
    from intsr.online import select_masks

    masks = None
    if prune is not None or masks_path is not None:
        masks = select_masks(0.0 if prune is None else prune, masks_path)
    rows = cost.layer_channels(masks)
    printed = cost.memory_bits(size, bits_f, bits_w, masks, "printed")
    table5 = cost.memory_bits(size, bits_f, bits_w, masks, "table5")
    eq17 = cost.cost(size, bits_f, masks)
    data = {"size": size, "bits_f": bits_f, "bits_w": bits_w, "layers": [
        {"layer": l + 1, "c_in": r[0], "c_out": r[1], "c_in_kept": r[2], "c_out_kept": r[3],
         "memory_kb_printed": p / 8000, "memory_kb_table5": t / 8000, "cost_eq17": c}
        for l, (r, p, t, c) in enumerate(zip(rows, printed, table5, eq17))],
        "memory_kb_printed": sum(printed) / 8000, "memory_kb_table5": sum(table5) / 8000,
        "cost_eq17": sum(eq17)}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"h = w = {size}, bits_F = {bits_f}, bits_theta = {bits_w}; KB = 1000 bytes")
    click.echo("layer  c_in c_out  c~in c~out  Eq.16 printed KB  Eq.16 (k^2, Table 5) KB"
               "        Eq.17")
    for d in data["layers"]:
        click.echo(f"{d['layer']:5d} {d['c_in']:5d} {d['c_out']:5d} {d['c_in_kept']:5d} "
                   f"{d['c_out_kept']:5d} {d['memory_kb_printed']:17.2f} "
                   f"{d['memory_kb_table5']:24.2f} {d['cost_eq17']:12,d}")
    click.echo(f"total{'':25s} {data['memory_kb_printed']:17.2f} "
               f"{data['memory_kb_table5']:24.2f} {data['cost_eq17']:12,d}")


if __name__ == "__main__":
    main()
