"""The ``retort`` command line: one thin module per verb."""
