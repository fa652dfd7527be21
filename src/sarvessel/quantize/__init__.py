"""Host tool subpackage: quantize (may import sarvessel.runtime; never imported by it)."""
