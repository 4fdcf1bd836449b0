"""Persistence: schema, engine set-up, migrations and the queries the conductor uses."""
