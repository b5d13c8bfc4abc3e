"""What each `intsr` command does, on files: read and validate the inputs, run the library,
write every output atomically. The CLI (cli/main.py) only parses options, shows progress and
turns errors into one line; these functions hold the policy, so scripts get the same behaviour.
"""
import json
import time
from importlib import resources
from pathlib import Path

import numpy as np

from intsr import blind, cost, ensemble as self_ensemble, threads, weights as wfiles
from intsr.arch import CHANNELS, num_weights
from intsr.floatpath.convert import noise_to_fixed
from intsr.floatpath.realdeg import RESIZERS, resizer_named
from intsr.io import (
    LOSSLESS_SUFFIXES,
    InputError,
    atomic_write,
    check_output_path,
    jpeg_quality,
    read_image,
    read_kernel,
    write_image,
)
from intsr.kernels import dispatch, isa
from intsr.kernels.resample import bicubic_upsample_u8
from intsr.state import is_state_file, load_state, save_state as save_state_file


def example_paths():
    """The bundled sample: a small LR image and its blur kernel (x4)."""
    base = resources.files("intsr") / "data"
    return Path(str(base / "example_lr.png")), Path(str(base / "example_kernel.npy"))


def check_report_path(path, option="--json"):
    if not Path(path).parent.resolve().is_dir():
        raise InputError(f"{option} {path}: its folder does not exist")


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text), binary=False)


def _write_sr(out, result, alpha, scale, grid):
    # An alpha plane is not super-resolved, only resized with the image (bicubic).
    if alpha is not None:
        alpha = bicubic_upsample_u8(alpha[:, :, None], scale, grid)[:, :, 0]
    write_image(out, result, alpha)


def expand_inputs(paths):
    """The image files named, or found (sorted) in named folders, and whether that is a batch
    (more than one path, or a folder)."""
    from intsr.evaluate import IMAGE_SUFFIXES

    files, batch = [], len(paths) > 1
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{p}: no images in the folder")
            files += found
            batch = True
        else:
            files.append(p)
    if not files:
        raise InputError("no input image given")
    return files, batch


def _batch_outputs(inputs, out_dir):
    """OUT folder (created if missing) and one output path per input: the input's name, as PNG
    unless its own format can be written losslessly. Checked before any work."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: with several inputs OUT must be a folder")
    if not out_dir.parent.resolve().is_dir():
        raise InputError(f"{out_dir}: its parent folder does not exist")
    outs = []
    for inp in inputs:
        name = inp.name if inp.suffix.lower() in LOSSLESS_SUFFIXES else inp.stem + ".png"
        outs.append(out_dir / name)
    dup = {o.name for o in outs if outs.count(o) > 1}
    if dup:
        raise InputError(f"two inputs would write the same output: {sorted(dup)[0]}")
    clobber = {o.resolve() for o in outs} & {i.resolve() for i in inputs}
    if clobber:
        raise InputError(f"{sorted(clobber)[0]}: an output would overwrite an input")
    out_dir.mkdir(exist_ok=True)
    for o in outs:
        check_output_path(o)
    return outs


BLIND_IMAGES = 8  # a blind batch estimates its one kernel from its first images


def adapt_paths(paths, out, kernel_path="auto", *, scale=4, steps=10, prune=None, weights=None,
                lr=None, report_path=None, save_state=None, continual=False, adapt_on=None,
                window=None, progress=None, on_image=None, grid=None, save_kernel=None,
                on_estimate=None, method="backprop", seed=0, options=None, precision=None,
                noise=None, jpeg="auto", check=None, ensemble="auto"):
    """`intsr adapt`: one image to OUT, or a batch (several images or folders) to the folder OUT.

    ``kernel_path`` None or "auto": blind mode, the kernel is estimated on the device
    (intsr.blind) from the image (a batch: from the mean prediction over its first
    BLIND_IMAGES images, or the ``adapt_on`` image) and written to ``save_kernel`` if given
    (a .npy that ``--kernel`` reproduces the run with, bit for bit); ``on_estimate(None)``
    before and ``on_estimate(description)`` after the estimate.

    A batch adapts once and super-resolves every image with the result: ``steps`` steps over
    the central ``window``-pixel windows of all images in turn (default), or on the one image
    ``adapt_on``; with ``continual`` it adapts ``steps`` steps on each image in order, keeping
    what it learned, before super-resolving it (a camera with a fixed degradation). The adapted
    state is saved to ``save_state`` if given. ``method``, ``seed``, ``options``: how the
    steps learn (intsr.online.make_learner); ``precision``: a shipped profile name (None: the
    scale's default, weights.default_precision). ``kernel_path`` may also name a resizer
    (intsr.online.adapt). The son is degraded like the input: ``noise`` levels or "auto" (None:
    "auto" in blind mode, else 0), ``jpeg`` a quality, None, or "auto" (an input JPEG's own
    quality, read from its quantization tables: intsr.io.jpeg_quality); ``check``: the safety
    net of intsr.online.adapt, single images only (None: on in blind mode); ``ensemble``: the
    final pass's self-ensemble, "auto" or 1, 2, 4, 8 passes at most (intsr.ensemble, chosen per
    image from the kernel, the grid and the image's size); ``grid`` as intsr.online.adapt's
    (a batch: one grid, from the images the estimate reads). Returns a report
    dict (sizes, seconds, throughput); ``on_image(i, n, path)`` is called after each image is
    written."""
    from intsr.online import (
        MIN_SON,
        TRAIN_MAX,
        Adapter,
        adapt_result,
        check_inputs,
        fixed_kernel,
        noise_level,
        resolve_grid,
        sr_turns,
        start_flags,
    )

    self_ensemble.check_setting(ensemble)
    inputs, batch = expand_inputs(paths)
    if window is not None and window < MIN_SON * scale:
        raise InputError(f"--window must be at least {MIN_SON * scale} LR pixels at x{scale}")
    if not batch and (continual or adapt_on is not None):
        raise InputError("--continual and --adapt-on are for several inputs")
    if continual and adapt_on is not None:
        raise InputError("give --continual or --adapt-on, not both")
    if check and batch:
        raise InputError("--check is for one input image (a batch has no single son pair)")
    outs = _batch_outputs(inputs, out) if batch else [Path(out)]
    if not batch:
        check_output_path(out)
    blind_mode = kernel_path is None or str(kernel_path) == "auto"
    if save_kernel is not None and not blind_mode:
        raise InputError("--save-kernel writes an estimated kernel: use it without --kernel")
    for p, option in ((report_path, "--json"), (save_state, "--save-state"),
                      (save_kernel, "--save-kernel")):
        if p is not None:
            check_report_path(p, option)
    if save_kernel is not None and (Path(save_kernel).suffix.lower() != ".npy"
                                    or Path(save_kernel).is_dir()):
        raise InputError(f"{save_kernel}: --save-kernel must name a .npy file")
    assumed = blind_mode and not blind.has_estimator(scale)
    if assumed:
        if save_kernel is not None:
            raise InputError(f"--save-kernel: no kernel estimator is shipped for x{scale} "
                             f"(blind mode assumes a {blind.ASSUMED_RESIZER} resize there)")
        kernel = blind.ASSUMED_RESIZER
    elif blind_mode:
        kernel = None
    elif str(kernel_path) in RESIZERS:
        kernel = str(kernel_path)
    else:
        kernel = read_kernel(kernel_path)
        kernel = resizer_named(kernel, scale) or kernel
    if noise is None:
        noise = "auto" if blind_mode else 0.0
    report = {"mode": "single", "steps": steps, "scale": scale, "prune": prune,
              "method": method, "seed": seed, "method_options": dict(options or {}),
              "precision": None,  # the Adapter's (below): the scale's default unless given
              "images": [], "kernels": dispatch.PATH}
    if not isinstance(noise, str):
        noise_to_fixed(noise)  # a bad value fails here, before any estimate is reported
    t_start = time.perf_counter()

    degraded = False  # blind mode: the estimate's images noisy or JPEGs (adapts_from_meta)

    def make_adapter():
        return Adapter(weights, scale=scale, prune=prune, lr=lr,
                       **start_flags(kernel, steps, degraded),
                       method=method, seed=seed, options=options, precision=precision)

    # Built before the estimate, so that a bad weights file or option fails before anything
    # is reported; built again if the estimate asks for other shipped weights (a resizer's
    # input, a degraded image, or blind mode's meta-learned point: shipped_start).
    ad = make_adapter()
    t_load = time.perf_counter() - t_start
    if not batch:
        pixels, alpha = read_image(inputs[0])
        check_inputs(pixels.shape, np.ones((1, 1)), scale, steps)
        jpeg = _jpeg_of(jpeg, inputs[0], pixels)  # read once: the estimate and the son need it
    # the images blind mode's estimate and grid read (a single image was read above)
    read_on = (inputs if not batch or adapt_on is None else [Path(adapt_on)])[:BLIND_IMAGES]
    images = [pixels] if not batch else None
    if blind_mode or grid == "auto":
        images = images or [read_image(p)[0] for p in read_on]
    grid, grid_how = resolve_grid(grid, images, blind_mode)
    report.update(grid=grid, **grid_how)
    if assumed:
        report["kernel_estimate"] = {"assumed": kernel}
    elif blind_mode:
        kernel = _estimate(images, scale, report, save_kernel, on_estimate)
        degraded = any(noise_level(im, noise) > 0 or _jpeg_of(jpeg, p, im) is not None
                       for im, p in zip(images, read_on, strict=True))
        if weights is None and ad.base != wfiles.shipped_start(
                scale, **start_flags(kernel, steps, degraded)):
            t0 = time.perf_counter()
            ad = make_adapter()
            t_load += time.perf_counter() - t0
    ad.grid = grid  # known once the images are read; nothing the Adapter loaded depends on it
    report["weights"], report["precision"] = ad.base, ad.precision
    if not batch:
        res = adapt_result(pixels, kernel, scale=scale, steps=steps, adapter=ad, grid=grid,
                           progress=progress, noise=noise, jpeg=jpeg,
                           check=blind_mode if check is None else check, ensemble=ensemble,
                           trace_memory=report_path is not None)
        result, rep = res.image, res.report()
        rep["degradation"].update(grid_how)  # resolved here, before the adapter was built
        rep["seconds"]["load"] = t_load
        if blind_mode and not assumed:
            rep["seconds"]["estimate"] = report["kernel_estimate"]["seconds"]
        report.update(rep, input=str(inputs[0]), size=[int(pixels.shape[1]),
                                                        int(pixels.shape[0])])
        _write_sr(outs[0], result, alpha, scale, grid)
        report["images"].append(_image_entry(inputs[0], outs[0], pixels, result))
    else:
        report["mode"] = "continual" if continual else "once"
        if noise == "auto":  # each image's son gets that image's own estimate
            report["son_noise"] = {}
        if not continual:
            if adapt_on is not None:
                pixels = read_image(adapt_on)[0]
                pairs = [ad.pair(pixels, kernel, jpeg=_jpeg_of(jpeg, adapt_on, pixels),
                                 noise=_son_noise(report, adapt_on, pixels, noise))]
                report["adapt_on"] = str(adapt_on)
            else:
                side = TRAIN_MAX if window is None else window
                pairs = []
                for p in inputs:
                    pixels = read_image(p)[0]
                    pairs.append(ad.pair(pixels, kernel, max_side=side,
                                         jpeg=_jpeg_of(jpeg, p, pixels),
                                         noise=_son_noise(report, p, pixels, noise)))
                report["window"] = side
            report["losses"] = ad.learn(pairs, steps, progress)
        k_fixed = fixed_kernel(kernel, scale)  # the batch's one kernel: its turns' taps
        for i, (inp, o) in enumerate(zip(inputs, outs, strict=True)):
            pixels, alpha = read_image(inp)
            if continual:
                ad.learn([ad.pair(pixels, kernel, jpeg=_jpeg_of(jpeg, inp, pixels),
                                  noise=_son_noise(report, inp, pixels, noise))], steps,
                         progress)
            turns = sr_turns(k_fixed, scale, grid, ensemble, pixels.shape)
            result = ad.super_resolve(pixels, turns)
            _write_sr(o, result, alpha, scale, grid)
            report["images"].append(_image_entry(inp, o, pixels, result, turns))
            if on_image:
                on_image(i + 1, len(inputs), o)
    _throughput(report, time.perf_counter() - t_start)
    if save_state is not None:
        save_state_file(save_state, ad.state())
        report["state"] = str(save_state)
    if report_path is not None:
        report.setdefault("input", [str(p) for p in paths])
        report["output"] = str(out)
        write_text(report_path, json.dumps(report, indent=2))
    return report


def _son_noise(report, path, pixels, noise):
    """The son noise of one batch image in levels: ``noise``, or with "auto" this image's own
    estimate (online.noise_level), then noted in the report by input path."""
    from intsr.online import noise_level

    if noise != "auto":
        return noise
    level = noise_level(pixels, "auto") / 256  # exact: the q8 estimate over a power of two
    report["son_noise"][str(path)] = level
    return level


def _jpeg_of(jpeg, path, pixels):
    """The son's JPEG setting for an input: "auto" reads a JPEG file's own quality from its
    tables (exact), and for any other file estimates from its pixels whether it was once a
    JPEG, and at which quality (blind.estimate_jpeg); anything else is the setting itself."""
    if not (isinstance(jpeg, str) and jpeg == "auto"):
        return jpeg
    from intsr.online import _as_rgb

    return jpeg_quality(path) or blind.estimate_jpeg(_as_rgb(pixels)[0])


def _estimate(images, scale, report, save_kernel, on_estimate):
    """Blind mode's estimate for adapt_paths from at most BLIND_IMAGES images (uint8 arrays): a
    blind.Estimate, described in the report."""
    from intsr.online import estimate_kernel

    if on_estimate:
        on_estimate(None)
    t0 = time.perf_counter()
    est = estimate_kernel(images, scale=scale)
    desc = {**est.describe(), "images": len(images),
            "seconds": time.perf_counter() - t0}
    report["kernel_estimate"] = desc
    if save_kernel is not None:
        atomic_write(save_kernel, lambda f: np.save(f, est.kernel()))
        desc["saved"] = str(save_kernel)
    if on_estimate:
        on_estimate(desc)
    return est


def sr_paths(paths, out, *, scale=4, weights=None, on_image=None, grid=None,
             ensemble="auto", report_path=None):
    """`intsr sr`: one image to OUT, or a batch to the folder OUT, without adaptation
    (``ensemble`` as adapt_paths', without a kernel; ``grid`` as intsr.online.super_resolve's,
    each image its own). Returns a report dict like adapt_paths, also written as JSON to
    ``report_path`` if given."""
    from intsr.online import Adapter, resolve_grid, sr_turns

    self_ensemble.check_setting(ensemble)
    inputs, batch = expand_inputs(paths)
    outs = _batch_outputs(inputs, out) if batch else [Path(out)]
    if not batch:
        check_output_path(out)
    if report_path is not None:
        check_report_path(report_path)
    if grid not in (None, "auto"):
        resolve_grid(grid, None, True)  # a bad grid fails before the weights load
    ad = Adapter(weights, scale=scale, adapting=False)
    report = {"mode": "sr", "scale": scale, "images": [], "kernels": dispatch.PATH}
    t_start = time.perf_counter()
    for i, (inp, o) in enumerate(zip(inputs, outs, strict=True)):
        pixels, alpha = read_image(inp)
        g, how = resolve_grid(grid, pixels, True)
        turns = sr_turns(None, scale, g, ensemble, pixels.shape)
        result = ad.super_resolve(pixels, turns, g)
        _write_sr(o, result, alpha, scale, g)
        report["images"].append({**_image_entry(inp, o, pixels, result, turns), "grid": g,
                                 **how})
        if on_image and batch:
            on_image(i + 1, len(inputs), o)
    _throughput(report, time.perf_counter() - t_start)
    if report_path is not None:
        report.update(weights=ad.base, output=str(out))
        write_text(report_path, json.dumps(report, indent=2))
    return report


def _image_entry(inp, out, pixels, result, turns=None):
    entry = {"input": str(inp), "output": str(out), "size": [int(pixels.shape[1]),
                                                             int(pixels.shape[0])],
             "out_size": [int(result.shape[1]), int(result.shape[0])]}
    if turns is not None:
        entry["ensemble"] = self_ensemble.describe(turns)
    return entry


def _throughput(report, seconds):
    n = len(report["images"])
    mp_in = sum(e["size"][0] * e["size"][1] for e in report["images"]) / 1e6
    mp_out = sum(e["out_size"][0] * e["out_size"][1] for e in report["images"]) / 1e6
    report["threads"] = threads.POLICY.report()
    report.update(total_seconds=seconds, images_per_s=n / seconds if seconds else None,
                  input_mp_per_s=mp_in / seconds if seconds else None,
                  output_mp_per_s=mp_out / seconds if seconds else None)


def info_lines(weights_path):
    """`intsr info`: architecture, per-layer Eq. 11 scales, the shipped masks' kept filters."""
    from intsr.quant import dynamic_scale

    weights_path = wfiles.resolve_path(weights_path)
    if is_state_file(weights_path):
        st = load_state(weights_path)
        w = [q.dequantize() for q in st.weights]
        lines = [f"adapted state: x{st.scale}, {st.steps} steps from {st.base}, lr {st.lr:g}, "
                 f"kept filters {[int(m.sum()) for m in st.masks]}"]
    else:
        w, lines = wfiles.load_weights(weights_path), []
    lines.insert(0, f"architecture: 8 conv 3x3, channels {'-'.join(map(str, CHANNELS))}, no "
                    f"biases, ReLU, global residual; {num_weights():,} weights")
    lines.insert(1, f"kernels: {dispatch.PATH} (compile target {isa.target()[0]})")
    pol = threads.POLICY
    lines.insert(2, f"threads: {'auto, up to' if pol.fixed is None else 'fixed at'} {pol.max} "
                    f"(--threads N or {threads.ENV}=N fixes the count; auto runs a step on "
                    f"fewer while another process holds a core)")
    for i, layer in enumerate(w, 1):
        lines.append(f"  conv{i}: HWIO {tuple(layer.shape)}  scale (Eq. 11) "
                     f"{dynamic_scale(layer)}  max|w| {float(np.abs(layer).max()):.4g}")
    for scale in wfiles.shipped_scales():
        lines.append(f"  x{scale} adapts with precision {wfiles.default_precision(scale)}")
        masks_file = wfiles.WEIGHTS_DIR / wfiles.shipped_config(scale)["masks"]
        for ratio, masks in sorted(wfiles.load_masks(masks_file).items()):
            lines.append(f"  x{scale} masks {ratio:.2f}: kept filters per layer "
                         f"{[int(m.sum()) for m in masks]}")
    return lines


def cost_report(size=32, bits_f=8, bits_w=32, prune=None, masks_path=None, precision=None):
    """`intsr cost`: Eq. 16 in both readings and Eq. 17, per layer and total, as a dict.
    ``precision``: a shipped profile name; its per-tensor widths replace bits_f / bits_w."""
    masks = wfiles.resolve_masks(prune, masks_path)
    prec = None if precision is None else wfiles.shipped_precision(precision)
    rows = cost.layer_channels(masks)
    printed = cost.memory_bits(size, bits_f, bits_w, masks, "printed", prec)
    table5 = cost.memory_bits(size, bits_f, bits_w, masks, "table5", prec)
    eq17 = cost.cost(size, bits_f, masks, prec)
    return {"size": size, "bits_f": bits_f, "bits_w": bits_w, "precision": precision,
            "layers": [
        {"layer": layer + 1, "c_in": r[0], "c_out": r[1], "c_in_kept": r[2], "c_out_kept": r[3],
         "memory_kb_printed": p / 8000, "memory_kb_table5": t / 8000, "cost_eq17": c}
        for layer, (r, p, t, c) in enumerate(zip(rows, printed, table5, eq17, strict=True))],
        "memory_kb_printed": sum(printed) / 8000, "memory_kb_table5": sum(table5) / 8000,
        "cost_eq17": sum(eq17)}


def cost_lines(data):
    """cost_report as the text table `intsr cost` prints."""
    widths = (f"precision {data['precision']} (per-tensor widths)" if data.get("precision")
              else f"bits_F = {data['bits_f']}, bits_theta = {data['bits_w']}")
    lines = [f"h = w = {data['size']}, {widths}; KB = 1000 bytes",
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
             md_path=None, progress=None, grid="centre"):
    """`intsr eval`: every configuration on every image of ``hr_dir`` under each kernel file;
    writes the JSON records and the Markdown tables if asked. Returns the tables (text)."""
    from intsr import evaluate

    for p, option in ((json_path, "--json"), (md_path, "--markdown")):
        if p is not None:
            check_report_path(p, option)
    if weights is not None and is_state_file(weights):
        w = load_state(weights)  # continue from its masters, masks and lr unless told otherwise
        if (prune, masks_path, layerwise) == (None, None, None):
            masks, default_lr = w.masks, w.lr
        else:
            masks, default_lr = wfiles.load_model(None, prune, masks_path, layerwise,
                                                  scale=scale)[1:]
    else:
        w, masks, default_lr = wfiles.load_model(weights, prune, masks_path, layerwise,
                                                 scale=scale)
    kernels = [(Path(k).stem, read_kernel(k)) for k in kernel_paths]
    records = list(evaluate.evaluate(hr_dir, kernels, weights=w, masks=masks,
                                     lr=lr or default_lr, scale=scale, steps=steps,
                                     configs=configs or evaluate.CONFIGS, progress=progress,
                                     grid=grid))
    table = evaluate.tables(records, steps)
    if json_path:
        write_text(json_path, json.dumps({"hr_dir": str(hr_dir), "scale": scale, "grid": grid,
                                          "steps": steps,
                                          "prune": prune, "masks": masks_path,
                                          "layerwise": layerwise, "records": records},
                                         indent=2))
    if md_path:
        write_text(md_path, table + "\n")
    return table
