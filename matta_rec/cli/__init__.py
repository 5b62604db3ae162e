"""The ``matta-rec`` command line: one module per sub-command."""
