"""The ``threatseer`` command and the demo: the top layer, above both the sensor and the hub,
which it reaches only through import strings resolved when a subcommand runs."""
