"""Server-side strategies: one module per method on a shared base."""
