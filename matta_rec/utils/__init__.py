"""Small shared utilities (config loading, filesystem helpers)."""
