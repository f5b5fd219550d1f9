"""The audit log of every look at patient data (issue 15 item 7).

`audit_log`: append-only, one row per look (who, when, action, patient ids, HTTP status, client
address); see service.store.audit. A new table only: nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.migrations.columns import BIG_ID, TIMESTAMP

revision = "0006"
down_revision: str | None = "0005"


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("patients", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_recorded_at", "audit_log", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_recorded_at", table_name="audit_log")
    op.drop_table("audit_log")
