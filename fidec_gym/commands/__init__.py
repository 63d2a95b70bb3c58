"""Sub-commands of the ``fidec`` command line (one module each)."""
