"""threatseer sensor: kernel events in (:mod:`threatseer.native`), enriched ECS events out to
a hub (:mod:`threatseer.common.wire`)."""
