"""The contact store's migrations make exactly the tables its models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from shardline.contacts.models import ContactsBase
from shardline.contacts.store import ContactStore


def test_migrations_match_the_models(tmp_path):
    store = ContactStore(f"sqlite:///{tmp_path / 'c.db'}")
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": "alembic_version_contacts"})
        diff = compare_metadata(ctx, ContactsBase.metadata)
    foreign = {"alembic_version_contacts"}
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name in foreign)]
    assert diff == [], f"models and migrations differ: add a migration\n{diff}"
