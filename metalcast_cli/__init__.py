"""The ``metalcast`` command line: the service commands and a thin REST client."""
