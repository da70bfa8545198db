"""threatseer hub."""
