"""The ``bouquet`` command: run one experiment, a grid of them, and compare their results."""
