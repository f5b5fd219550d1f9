"""CDS Hooks cards issued and their feedback (issue 15 item 8).

* `cds_cards`: one row per card returned to an EHR (uuid, patient, status): a feedback call
  names only the uuid.
* `cds_feedback`: append-only, one row per feedback entry (accepted / overridden with reason),
  who and when; see service.store.cds_feedback.

New tables only: nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.migrations.columns import BIG_ID, TIMESTAMP

revision = "0005"
down_revision: str | None = "0004"


def upgrade() -> None:
    op.create_table(
        "cds_cards",
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(255), nullable=False),
        sa.Column("study", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("issued_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("uuid", name="pk_cds_cards"),
    )
    op.create_table(
        "cds_feedback",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("card_uuid", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason_code", sa.String(64), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("outcome_at", TIMESTAMP, nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cds_feedback"),
        sa.CheckConstraint("outcome IN ('accepted', 'overridden')", name="ck_cds_feedback_outcome"),
    )
    op.create_index("ix_cds_feedback_patient_id", "cds_feedback", ["patient_id"])


def downgrade() -> None:
    op.drop_index("ix_cds_feedback_patient_id", table_name="cds_feedback")
    op.drop_table("cds_feedback")
    op.drop_table("cds_cards")
