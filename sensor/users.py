"""uid -> user name, cached (the passwd database is read once per uid, not per event).

Uids arrive as ECS has them: keyword strings ("0", "1000").
"""

from __future__ import annotations

import pwd


class UserNames:
    def __init__(self) -> None:
        self.known: dict[str, str | None] = {}  # read by the enricher's hot loop

    def name(self, uid: str) -> str | None:
        try:
            return self.known[uid]
        except KeyError:
            pass
        try:
            name: str | None = pwd.getpwuid(int(uid)).pw_name
        except (KeyError, OverflowError, TypeError, ValueError):
            name = None
        if len(self.known) > 65536:
            self.known.clear()
        self.known[uid] = name
        return name
