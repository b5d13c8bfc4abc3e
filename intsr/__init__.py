"""intsr: integer-only on-device adaptation of a super-resolution network.

``intsr.adapt(image, kernel, ...)`` is Algorithm 2 (see intsr.online)."""

__all__ = ["adapt", "super_resolve"]


def __getattr__(name):
    # Lazy, so that `import intsr.quant` (or the trainer's `import intsr.pruning`) stays light.
    if name in __all__:
        from intsr import online
        return getattr(online, name)
    raise AttributeError(f"module 'intsr' has no attribute {name!r}")
