"""The HTTP routes, one module per resource: :mod:`.jobs`, :mod:`.tiles`, :mod:`.system`."""
