"""intsr: integer-only on-device adaptation of a super-resolution network.

``intsr.adapt(image, kernel, ...)`` is Algorithm 2 (see intsr.online), ``intsr.adapt_result``
the same returning an AdaptResult (image, losses, seconds, MACs, estimate); ``intsr.Adapter`` the
adapting network the batch modes use, ``intsr.estimate_kernel`` blind mode's estimate."""

__all__ = ["adapt", "adapt_result", "AdaptResult", "super_resolve", "Adapter", "estimate_kernel",
           "__version__"]


def _version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("intsr")
    except PackageNotFoundError:  # a source tree that was not installed
        return "0+unknown"


def __getattr__(name):
    # Lazy, so that `import intsr.quant` (or the trainer's `import intsr.pruning`) stays light;
    # a submodule (intsr.online, intsr.blind, ...) is imported on first use too.
    if name == "__version__":
        return _version()
    if name in __all__:
        from intsr import online
        return getattr(online, name)
    import importlib
    try:
        return importlib.import_module(f"intsr.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"intsr.{name}":  # a real module failing to import is not a missing one
            raise
        raise AttributeError(f"module 'intsr' has no attribute {name!r}") from None
