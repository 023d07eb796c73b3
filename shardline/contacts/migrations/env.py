"""Alembic environment for the contact store (its own version table, beside other tables)."""

from __future__ import annotations

from alembic import context

from shardline.contacts.models import ContactsBase
from shardline.db import create_engine

VERSION_TABLE = "alembic_version_contacts"

url = context.config.get_main_option("sqlalchemy.url")
connection = context.config.attributes.get("connection")


def run(conn) -> None:
    context.configure(
        connection=conn,
        target_metadata=ContactsBase.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=url, target_metadata=ContactsBase.metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    run(connection)
else:
    engine = create_engine(url)
    with engine.connect() as conn:
        run(conn)
