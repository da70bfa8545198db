"""Rule bundles."""
