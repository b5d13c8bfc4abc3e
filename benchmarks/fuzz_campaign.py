"""The long fuzz campaign (issue 16; results in docs/fuzzing.md): N inputs per loader a user
reaches, mutations of valid seeds and structure-aware files, each under a time limit, in child
processes whose deaths, hangs and peak RSS are counted; then some refused inputs through the
real CLI. Exits 1 if any input was mishandled.

    python benchmarks/fuzz_campaign.py --per-loader 100000 --seed 16 --out report.json

The same seed gives the same inputs (the harness is tests/fuzz_inputs.py); every input that
killed, hung or was mishandled is kept under --work/found with its loader, mode and index.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import fuzz_inputs as F  # noqa: E402
from machine import cpu_name  # noqa: E402


def main():
    user = [name for name in F.LOADERS if not name.startswith("_")]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-loader", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None, help="JSON report")
    ap.add_argument("--loaders", default=",".join(user),
                    help=f"of {','.join(user)}; _scipy_mat: scipy.io.loadmat on the .mat "
                         f"mutations (run with --structured 0; only its deaths count)")
    ap.add_argument("--structured", type=float, default=0.25,
                    help="share of inputs drawn by the hypothesis strategies")
    ap.add_argument("--limit", type=float, default=5.0, help="seconds per input (in-process)")
    ap.add_argument("--hard-limit", type=float, default=60.0,
                    help="seconds without progress before the child is killed (a native hang)")
    ap.add_argument("--as-mb", type=int, default=1024,
                    help="address space the child may add to its start (MB)")
    ap.add_argument("--cli-per-loader", type=int, default=20)
    ap.add_argument("--work", type=Path, default=None, help="where inputs found are kept")
    args = ap.parse_args()
    loaders = args.loaders.split(",")
    unknown = set(loaders) - set(F.LOADERS)
    if unknown:
        ap.error(f"unknown loaders {sorted(unknown)}")

    plan = F.plan_for(args.per_loader, args.structured, loaders)
    t0 = time.time()
    rep = F.run(plan, seed=args.seed, work=args.work, limit=args.limit,
                hard_limit=args.hard_limit, as_mb=args.as_mb, keep_clean=args.cli_per_loader * 3,
                cli_per_loader=args.cli_per_loader, log=lambda m: print(m, flush=True))
    wall = time.time() - t0

    cols = ("inputs", "accepted", "clean", "bugs", "deaths", "hangs", "peak_rss_mb")
    print(f"{'loader':12}" + "".join(f"{c:>12}" for c in cols))
    for name, r in rep["loaders"].items():
        print(f"{name:12}" + "".join(f"{r[c]:>12}" for c in cols))
    cli = rep["cli"]
    print(f"CLI: {cli['checked']} refused inputs through `python -m cli.main`, "
          f"{len(cli['bad'])} mishandled")
    print(f"wall {wall:.0f} s, child peak RSS {rep['peak_rss_mb']:.0f} MB, {cpu_name()}")
    for b in rep["bugs"][:20]:
        print("BUG", b)
    for b in cli["bad"][:20]:
        print("CLI", b)

    if args.out:
        import numpy
        import PIL
        import scipy
        report = {"command": " ".join(["python benchmarks/fuzz_campaign.py"] + sys.argv[1:]),
                  "seed": args.seed, "per_loader": args.per_loader,
                  "structured_share": args.structured, "limit_s": args.limit,
                  "plan": plan, "wall_s": round(wall, 1), "cpu": cpu_name(),
                  "python": platform.python_version(), "numpy": numpy.__version__,
                  "pillow": PIL.__version__, "scipy": scipy.__version__, **rep}
        report.pop("work", None)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    bad = sum(r["bugs"] + r["deaths"] + r["hangs"] for r in rep["loaders"].values())
    return 1 if bad or cli["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
