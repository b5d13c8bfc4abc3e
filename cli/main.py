"""`intsr` console script (click). Thin: every command parses its options, calls one function
of intsr.jobs (which reads, runs and writes atomically), and prints progress and results.

Errors are one line on stderr and a non-zero exit; outputs are written atomically, so a
failure never leaves a partial or clobbered OUT."""
import functools
import json
import sys
import traceback
import warnings

import click

from intsr.io import InputError

# Failures a user can cause (a bad file, option or path): shown as their message alone. A
# TypeError or KeyError is a bug of ours, reported as internal (readers turn a malformed file
# into ValueError / InputError themselves).
_EXPECTED = (InputError, ValueError, OSError, ArithmeticError)


def _debugging():
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def _guarded(fn, *args, **kwargs):
    """Call ``fn``; any exception becomes `Error: <one line>` and exit status 1 (click's): an
    expected one its message, MemoryError "out of memory", anything else "internal error:
    <type>: <message>". With --debug (or INTSR_DEBUG=1) the traceback is printed first."""
    try:
        return fn(*args, **kwargs)
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except Exception as e:
        if _debugging():
            traceback.print_exc()
        text = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, MemoryError):
            text = "out of memory"
        elif not isinstance(e, _EXPECTED):
            text = f"internal error: {type(e).__name__}: {text}"
        raise click.ClickException(text) from None


def _fail_cleanly(fn):
    """Turn every failure of a command into one line and exit status 1 (_guarded)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return _guarded(fn, *args, **kwargs)
    return wrapper


_GRIDS_HELP = ("Sampling grid of Eq. 1: centre (this project), corner (MZSR, ZSSR, KernelGAN: "
               "LR = blur(HR)[::s, ::s])")
_grid_option = click.option("--grid", type=click.Choice(["centre", "corner"]), default="centre",
                            show_default=True, help=_GRIDS_HELP + ".")
_grid_auto_option = click.option(
    "--grid", type=click.Choice(["centre", "corner", "auto"]), default=None,
    help=_GRIDS_HELP + " or auto (a prior: corner for a lossless image with white colour noise "
         "of 3 levels or more, docs/real-inputs.md). Default: auto without --kernel and for "
         "sr, centre with --kernel.")


_ensemble_option = click.option(
    "--ensemble", default="auto", show_default=True,
    help="Self-ensemble of the final pass: average the outputs over the turns of the image "
         "(transposed, flipped) that leave its degradation unchanged, at most 1, 2, 4 or 8 "
         "passes; auto: as many as one 1080p frame's pixels allow (a full frame: one).")


def _set_threads(ctx, param, value):
    if value is not None:
        from intsr import threads
        try:
            threads.configure(value)
        except ValueError as e:
            raise click.ClickException(f"--threads: {e}") from None  # one line, as all errors


_threads_option = click.option(
    "--threads", default=None, expose_value=False, callback=_set_threads,
    help="Threads the kernels run on: a count, or auto (the default, also INTSR_THREADS): "
         "a step runs on fewer while another process holds a core.")


def _warn_to_stderr(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {message}", err=True)


class _GuardedGroup(click.Group):
    """The top-level guard: whatever a command lets through is still one line (_guarded)."""

    def invoke(self, ctx):
        return _guarded(super().invoke, ctx)


@click.group(cls=_GuardedGroup)
@click.version_option(package_name="intsr")
@click.option("--debug", is_flag=True, envvar="INTSR_DEBUG",
              help="Show the traceback of an error (also: INTSR_DEBUG=1).")
def main(debug):
    """Integer-only on-device adaptation of a super-resolution network."""
    warnings.showwarning = _warn_to_stderr


def _say_if_compiling(quiet, blind=False):
    from intsr.kernels.dispatch import kernels_cached
    if quiet:
        return
    if not kernels_cached():
        click.echo("compiling kernels (first run only; about a minute)...", err=True)
    elif blind and not kernels_cached(blind=True):
        click.echo("compiling the kernel estimator's kernels (first blind run only)...", err=True)


def _on_image(quiet):
    def report(i, n, path):
        if not quiet:
            click.echo(f"[{i}/{n}] wrote {path}", err=True)
    return None if quiet else report


def _wrote(out, report, quiet):
    if quiet:
        return
    images = report["images"]
    if len(images) == 1 and report["mode"] in ("single", "sr"):
        w, h = images[0]["out_size"]
        click.echo(f"wrote {out} ({w}x{h})", err=True)
        # the prior's one unusual bet, said (docs/real-inputs.md: about 4 dB when wrong)
        how = images[0] if report["mode"] == "sr" else report
        if how.get("grid_from") == "prior" and how.get("grid") == "corner":
            click.echo(f"grid: corner (colour noise {how['colour_noise']:.1f} levels in a "
                       "lossless image; --grid centre if a resizer made it)", err=True)
    else:
        click.echo(f"{len(images)} images in {report['total_seconds']:.1f} s: "
                   f"{report['images_per_s']:.2f} images/s, "
                   f"{report['output_mp_per_s']:.2f} output MP/s", err=True)


@main.command(short_help="Adapt to an image and its blur kernel, then super-resolve it.")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--kernel", "kernel_path", type=click.Path(dir_okay=False), default="auto",
              show_default=True,
              help="Blur kernel of the input (.npy, or .mat with 'kernel'/'Kernel'), a "
                   "resizer that made it (bicubic, bilinear, box, lanczos, cv2-cubic, "
                   "cv2-linear), or auto: estimate it on the device (blind mode).")
@click.option("--save-kernel", type=click.Path(dir_okay=False), default=None,
              help="Blind mode: write the estimated kernel (.npy) for reuse with --kernel.")
@click.option("--example", is_flag=True, help="Adapt the bundled sample; PATHS is just OUT.")
@click.option("--scale", default=4, show_default=True, type=int, help="Upscaling factor.")
@click.option("--steps", default=10, show_default=True, type=int,
              help="Integer SGD steps (per image with --continual).")
@click.option("--prune", type=float, default=None,
              help="Gradient-pruning ratio of a shipped mask (0, 0.27, 0.5, 0.67, 0.85).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Weights (.npz or PyTorch .pt) or a saved state to continue from; "
                   "default: the shipped weights.")
@click.option("--lr", type=float, default=None, help="Learning rate (default: the weights').")
@click.option("--save-state", type=click.Path(dir_okay=False), default=None,
              help="Save the adapted state (int32 masters, masks, provenance) as .npz.")
@click.option("--continual", is_flag=True,
              help="Several inputs: keep learning from image to image, in order.")
@click.option("--adapt-on", type=click.Path(dir_okay=False), default=None,
              help="Several inputs: adapt once on this image, then super-resolve all.")
@click.option("--window", type=int, default=None,
              help="Several inputs (default mode): LR pixels per side of the central window of "
                   "each image the steps train on in turn (default 256).")
@_grid_auto_option
@click.option("--method", type=click.Choice(["backprop", "forward", "mest"]), default="backprop",
              show_default=True,
              help="How the steps learn: back-propagation (the paper), forward gradients "
                   "(no backward pass, least memory) or mest (masks that mutate online).")
@click.option("--directions", type=int, default=None,
              help="forward: random directions per step (default 4).")
@click.option("--perturb", default=None,
              help="forward: layers to perturb, e.g. 8, 6-8, 1,4,8 or all (default all).")
@click.option("--mutate-every", type=int, default=None,
              help="mest: steps between mask mutations (default 5).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the forward directions and mest regrowth (integer generator).")
@click.option("--precision", default=None,
              help="Bit widths per tensor: a shipped profile, int8 (the paper's), mixed, "
                   "mixed-x2, grouped-x2 (x2, a faster SR pass), int16 or small (16-bit "
                   "masters). Default: the scale's (int8 at x4, "
                   "grouped-x2 at x2; `intsr info` lists them).")
@click.option("--noise", default=None,
              help="Noise of the input in 8-bit levels (standard deviation), or auto: "
                   "estimate it. The son gets as much. Default: auto in blind mode, else 0.")
@click.option("--jpeg", default="auto", show_default=True,
              help="JPEG quality the input was saved with (1-100), none, or auto: a JPEG "
                   "input's own, from its quantization tables; for another file, read from "
                   "its pixels if it was once a JPEG. The son gets the same round trip.")
@click.option("--check/--no-check", default=None,
              help="Safety net: score the adapted network against the direct-SR weights and "
                   "(not for a JPEG) bicubic on held-out rows of the son pair and keep the "
                   "best. Default: on in blind mode.")
@_ensemble_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write a report: per-step L1 loss, seconds, MACs, memory, throughput.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@_threads_option
@_fail_cleanly
def adapt(paths, kernel_path, save_kernel, example, scale, steps, prune, weights, lr, save_state,
          continual, adapt_on, window, grid, method, directions, perturb, mutate_every, seed,
          precision, noise, jpeg, check, ensemble, json_path, quiet):
    """Adapt to IN with its blur kernel in integer arithmetic, then write the SR image OUT.
    Without --kernel (or with --kernel auto) the kernel is estimated on the device first.
    With several inputs (or folders), OUT is a folder and every image is super-resolved: by
    default after one adaptation over windows of all of them, or --adapt-on one image, or
    --continual from image to image.

    \b
    intsr adapt IN OUT --kernel K.npy
    intsr adapt IN OUT [--save-kernel K.npy]          (blind)
    intsr adapt IN1 IN2 ... OUT_DIR --kernel K.npy [--continual]
    intsr adapt --example OUT"""
    from intsr.jobs import adapt_paths, example_paths

    if example:
        if len(paths) != 1 or kernel_path != "auto":
            raise InputError("with --example give only OUT (the sample brings its own kernel)")
        inp, kernel_path = example_paths()
        inputs, out = [inp], paths[0]
    else:
        if len(paths) < 2:
            raise InputError("usage: intsr adapt IN... OUT [--kernel K] (or: intsr adapt "
                             "--example OUT)")
        inputs, out = list(paths[:-1]), paths[-1]
    show = not quiet and sys.stderr.isatty() and steps and not continual
    bar = None  # entered at the first step, after any kernel estimate has been reported

    def progress(i, n, loss):
        nonlocal bar
        if show:
            if bar is None:
                bar = click.progressbar(length=n, label="adapting", file=sys.stderr)
                bar.__enter__()
            bar.update(1)
        elif not quiet:
            click.echo(f"step {i}/{n}  L1 {loss:.5f}", err=True)

    def on_estimate(desc):
        if quiet:
            return
        if desc is None:
            click.echo("estimating the blur kernel (blind mode)...", err=True)
        elif desc.get("family") == "resizer":
            click.echo(f"kernel: a {desc['resizer']} resize, {desc['size']}x{desc['size']} "
                       f"({desc['seconds']:.2f} s)", err=True)
        else:
            click.echo(f"kernel: Gaussian sigma {desc['sigma1']:.2f} x {desc['sigma2']:.2f} at "
                       f"{desc['theta_deg']:.1f} deg, {desc['size']}x{desc['size']} "
                       f"({desc['seconds']:.2f} s)", err=True)

    options = {}
    for flag, key, value, for_method in (("--directions", "directions", directions, "forward"),
                                         ("--perturb", "layers", perturb, "forward"),
                                         ("--mutate-every", "every", mutate_every, "mest")):
        if value is not None:
            if method != for_method:
                raise InputError(f"{flag} is for --method {for_method}")
            options[key] = value
    _say_if_compiling(quiet, blind=kernel_path == "auto")
    try:
        report = adapt_paths(inputs, out, kernel_path, scale=scale, steps=steps, prune=prune,
                             weights=weights, lr=lr, report_path=json_path, save_state=save_state,
                             continual=continual, adapt_on=adapt_on, window=window,
                             progress=progress, on_image=_on_image(quiet), grid=grid,
                             save_kernel=save_kernel, on_estimate=on_estimate, method=method,
                             seed=seed, options=options, precision=precision,
                             noise=_noise_option(noise), jpeg=_jpeg_option(jpeg), check=check,
                             ensemble=ensemble)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    _wrote(out, report, quiet)


def _noise_option(text):
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--noise must be a number of levels or auto, not {text!r}") from None


def _jpeg_option(text):
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        quality = int(text)
    except ValueError:
        quality = 0
    if not 1 <= quality <= 100:
        raise InputError(f"--jpeg must be a quality 1-100, none or auto, not {text!r}")
    return quality


@main.command(short_help="Super-resolve an image without adaptation.")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--scale", default=4, show_default=True, type=int)
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Weights or a saved state (default: the shipped weights for SR).")
@_grid_auto_option
@_ensemble_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write a JSON report: per image the grid (and why), the self-ensemble's "
                   "turns, sizes; seconds and throughput.")
@click.option("--quiet", is_flag=True)
@_threads_option
@_fail_cleanly
def sr(paths, scale, weights, grid, ensemble, json_path, quiet):
    """Super-resolve IN without adaptation (0 steps; no kernel needed) and write OUT. With
    several inputs (or folders), OUT is a folder.

    \b
    intsr sr IN OUT
    intsr sr IN1 IN2 ... OUT_DIR"""
    from intsr.jobs import sr_paths

    if len(paths) < 2:
        raise InputError("usage: intsr sr IN... OUT")
    _say_if_compiling(quiet)
    report = sr_paths(list(paths[:-1]), paths[-1], scale=scale, weights=weights,
                      on_image=_on_image(quiet), grid=grid, ensemble=ensemble,
                      report_path=json_path)
    _wrote(paths[-1], report, quiet)


@main.command(short_help="Show the architecture, weight scales and shipped masks.")
@click.argument("weights", type=click.Path(dir_okay=False))
@_threads_option
@_fail_cleanly
def info(weights):
    """Architecture, weight scales, and shipped masks with their pruning ratios."""
    from intsr.jobs import info_lines
    for line in info_lines(weights):
        click.echo(line)


@main.command("eval", short_help="Score configurations on a folder of HR images (Table 1).")
@click.argument("hr_dir", type=click.Path(file_okay=False))
@click.option("--kernel", "kernels", multiple=True, required=True,
              type=click.Path(dir_okay=False), help="Evaluation kernel (repeatable).")
@click.option("--scale", default=4, show_default=True, type=int)
@click.option("--steps", default=10, show_default=True, type=int)
@click.option("--config", "configs", multiple=True,
              help="Configurations to run (repeatable): bicubic, fp, int8-ours, shipped (what "
                   "adapt runs at the scale), int8-blind, ... (intsr.evaluate); default: the "
                   "paper's.")
@click.option("--prune", type=float, default=None, help="Shipped mask ratio for every config.")
@click.option("--masks", "masks_path", type=click.Path(dir_okay=False), default=None,
              help="Masks .npz to take the --prune ratio from (default: the shipped one).")
@click.option("--layerwise", type=int, default=None,
              help="Layer-wise baseline (Table 6): freeze the first N layers instead.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default=None)
@_grid_option
@click.option("--quiet", is_flag=True)
@_threads_option
@_fail_cleanly
def evaluate_cmd(hr_dir, kernels, scale, steps, configs, prune, masks_path, layerwise, weights, lr,
                 json_path, md_path, grid, quiet):
    """Adapt and score every image of HR_DIR under each kernel (Eq. 1 LR, Y-PSNR)."""
    from intsr.jobs import eval_dir

    bar = None

    def progress(done, total):
        nonlocal bar
        if quiet:
            return
        if bar is None:
            bar = click.progressbar(length=total, label="evaluating", file=sys.stderr,
                                    show_pos=True)
            bar.__enter__()
        bar.update(1)

    _say_if_compiling(quiet)
    try:
        table = eval_dir(hr_dir, kernels, scale=scale, steps=steps, configs=configs, prune=prune,
                         masks_path=masks_path, layerwise=layerwise, weights=weights, lr=lr,
                         json_path=json_path, md_path=md_path, progress=progress, grid=grid)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(table)


@main.command("cost", short_help="Back-propagation memory and cost per layer (Eq 16-17).")
@click.option("--size", default=32, show_default=True, type=int, help="Feature map h = w.")
@click.option("--bits-f", default=8, show_default=True, type=int, help="Activation bits.")
@click.option("--bits-w", default=32, show_default=True, type=int, help="Weight bits.")
@click.option("--prune", type=float, default=None, help="Shipped mask ratio.")
@click.option("--masks", "masks_path", type=click.Path(dir_okay=False), default=None,
              help="Masks .npz (keys p{pct}_l{l}); with --prune picks that ratio.")
@click.option("--precision", default=None,
              help="A shipped precision profile (int8, mixed, mixed-x2, grouped-x2, int16, "
                   "small): per-tensor widths instead of --bits-f / --bits-w.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_threads_option
@_fail_cleanly
def cost_cmd(size, bits_f, bits_w, prune, masks_path, precision, as_json):
    """Eq. 16 (memory) and Eq. 17 (cost) of back-propagation, per layer and total."""
    from intsr.jobs import cost_lines, cost_report

    data = cost_report(size, bits_f, bits_w, prune, masks_path, precision)
    click.echo(json.dumps(data, indent=2) if as_json else "\n".join(cost_lines(data)))


if __name__ == "__main__":
    main()
