"""distribution lists, their pairs and the partners' bid tables

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "distribution_lists",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("roster_json", sa.Text(), nullable=False),
        sa.Column("invited_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("accepted_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "list_pairs",
        sa.Column("list_id", sa.String(length=32), nullable=False),
        sa.Column("peer", sa.String(length=32), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=12), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("bids_sent", sa.Integer(), nullable=False),
        sa.Column("agreement_json", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["list_id"], ["distribution_lists.id"]),
        sa.PrimaryKeyConstraint("list_id", "peer"),
    )
    with op.batch_alter_table("list_pairs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_list_pairs_session_id"), ["session_id"], unique=False)
    op.create_table(
        "list_bid_parts",
        sa.Column("list_id", sa.String(length=32), nullable=False),
        sa.Column("peer", sa.String(length=32), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("entries_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("list_id", "peer", "part"),
    )


def downgrade() -> None:
    op.drop_table("list_bid_parts")
    with op.batch_alter_table("list_pairs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_list_pairs_session_id"))
    op.drop_table("list_pairs")
    op.drop_table("distribution_lists")
