"""Alembic environment: runs against the connection metalcast hands over."""
from alembic import context

from conductor.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` command line: use the configured URL
    from conductor.db.engine import make_engine
    connection = make_engine(context.config.get_main_option("sqlalchemy.url")).connect()

context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
