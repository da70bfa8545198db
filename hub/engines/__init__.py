"""The hub's scoring engines: static lists, dynamic rules, learned profiles.

Every engine takes a whole batch (``process(events, now)``) so per-call overhead is paid once
per batch, and appends indicator dicts to each event's ``threatseer.indicators`` list.
"""
