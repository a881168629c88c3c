"""The apps layer's error type (its own module so that options and tasks share it)."""


class TaskError(ValueError):
    """Bad task input (missing/empty/ill-formed data): the CLI prints it and exits 2."""


__all__ = ["TaskError"]
