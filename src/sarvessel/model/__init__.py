"""Host tool subpackage: model (may import sarvessel.runtime; never imported by it)."""
