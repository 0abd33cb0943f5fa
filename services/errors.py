"""Errors an operator can fix: the CLI says them in one line and exits 2."""


class OperatorError(ValueError):
    """A request or a setting that cannot be carried out as given."""
