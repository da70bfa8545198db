"""threatseer sensor: kernel events in, enriched ECS events out to a hub.

The sensor package is also the base layer that the hub builds on: the event schema
(:mod:`.ecs`), the wire format (:mod:`.wire`) and the config-file loader (:mod:`.configfile`)
are defined here once and imported by the hub.
"""

__version__ = "0.1.0"
