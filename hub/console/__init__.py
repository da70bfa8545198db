"""The web console: live alerts, the process tree behind each, fleet health and profiles.

Served by the hub itself (``console.listen``) or by ``threatseer console --hub ...`` as a PUB
subscriber with its own CURVE key. Either way it is the same aiohttp application
(:mod:`.server`) fed by the hub's PUB stream (:mod:`.feed`): what it shows is what any tap
subscriber could see, kept in bounded memory (:mod:`.alerts`, :mod:`.tree`, :mod:`.fleet`).
Access needs a bearer token (:mod:`.tokens`); a viewer reads, an admin may also reset or
relearn profiles. The page is plain HTML, CSS and JavaScript shipped as package data: nothing
is fetched from elsewhere at run time and nothing needs building.
"""
