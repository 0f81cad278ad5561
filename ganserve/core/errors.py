"""Errors that end a command with exit code 2 and a one-line reason."""


class GanserveError(Exception):
    """A user-facing failure: bad input, missing file, failed check. The CLI prints it on one line, exits 2."""


class CheckpointError(GanserveError):
    """A checkpoint is missing, truncated, corrupt or not a ganserve checkpoint."""


class RepositoryError(GanserveError):
    """A model repository or one of its models is malformed."""
