"""The ``chunkref`` command line."""
