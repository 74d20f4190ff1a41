"""Task families: one module per family."""
