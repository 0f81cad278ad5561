"""Errors that end a command with exit code 2 and a one-line reason."""


class GanserveError(Exception):
    """A user-facing failure: bad input, missing file, failed check. The CLI prints it on one line, exits 2."""


class CheckpointError(GanserveError):
    """A checkpoint is missing, truncated, corrupt or not a ganserve checkpoint."""


class RepositoryError(GanserveError):
    """A model repository or one of its models is malformed."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-blank line of an exception's message (at most `limit` characters), or its type's name when the
    message is empty: what one-line errors quote of a library's exception."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__


def described(exc: BaseException, limit: int = 200) -> str:
    """"TypeName: first line" of an exception, or just "TypeName" when its message is empty."""
    line, name = first_line(exc, limit), type(exc).__name__
    return name if line == name else f"{name}: {line}"
