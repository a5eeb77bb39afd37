"""The base of every error caused by the user's input rather than by a bug."""


class LampError(ValueError):
    """A message that names what is wrong and what to do; every command prints it in one line."""
