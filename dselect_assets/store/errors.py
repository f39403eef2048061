"""What a reader of the store raises when an upstream result is absent or unreadable."""


class MissingUpstream(RuntimeError):
    pass


class CorruptFile(MissingUpstream):
    """A file the store points at cannot be read; the message says how to rebuild it."""
