"""One Alembic revision a schema change, oldest first (``0001_baseline`` is the schema of
pacsnode 0.1.0, before migrations)."""
