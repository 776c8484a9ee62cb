"""Errors a user can cause; the CLI prints them as one line and exits with code 2."""


class SlimvlError(ValueError):
    """Base of the errors caused by bad input rather than by a bug."""


class InputError(SlimvlError):
    """A bad image, prompt or argument."""


class ModelLoadError(SlimvlError):
    """A model reference that cannot be loaded: unknown, missing, unsupported or corrupt."""
