"""Host tool subpackage: hw (may import sarvessel.runtime; never imported by it)."""
