"""The run directory: its store, schemas, lease, secrets, keys and maintenance (compact, doctor)."""
