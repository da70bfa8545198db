"""The one error type of the query language."""

from __future__ import annotations


class QueryError(ValueError):
    """A condition that cannot be parsed or compiled; ``column`` is 1-based when known."""

    def __init__(self, message: str, column: int | None = None) -> None:
        self.message, self.column = message, column
        super().__init__(f"column {column}: {message}" if column else message)
