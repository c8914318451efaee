"""The store: schema, migrations, and every query the rest of digest asks."""
