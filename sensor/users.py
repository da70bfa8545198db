"""uid -> user name, cached (the passwd database is read once per uid, not per event)."""

from __future__ import annotations

import pwd


class UserNames:
    def __init__(self) -> None:
        self._names: dict[int, str | None] = {}

    def name(self, uid: int) -> str | None:
        try:
            return self._names[uid]
        except KeyError:
            pass
        try:
            name: str | None = pwd.getpwuid(uid).pw_name
        except (KeyError, OverflowError, TypeError):
            name = None
        if len(self._names) > 65536:
            self._names.clear()
        self._names[uid] = name
        return name
