"""The contract between sensors and hubs, imported by both and by nothing below them: the
event schema (:mod:`.ecs`), the wire format (:mod:`.wire`), config-file loading
(:mod:`.configfile`) and key files and CURVE sockets (:mod:`.keys`)."""

__version__ = "0.1.0"
