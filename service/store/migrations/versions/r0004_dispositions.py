"""Coordinators' entries (issue 15 item 3): dispositions and manual criteria's answers.

* `review_entries`: append-only, one row per entry a person made about a patient; the current
  disposition and answers are derived (each kind's newest), the rest is history. A re-screen
  never touches it. `(patient_id, study, version)` is unique: the version is the review's
  ETag, and the key refuses the second of two writers from the same version.

A new table only: nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.migrations.columns import BIG_ID, TIMESTAMP

revision = "0004"
down_revision: str | None = "0003"


def upgrade() -> None:
    op.create_table(
        "review_entries",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("patient_id", sa.String(255), nullable=False),
        sa.Column("study", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("criterion", sa.String(64), nullable=True),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_review_entries"),
        sa.CheckConstraint("kind IN ('disposition', 'manual')", name="ck_review_entries_kind"),
        sa.UniqueConstraint(
            "patient_id", "study", "version", name="uq_review_entries_patient_id_study_version"
        ),
    )


def downgrade() -> None:
    op.drop_table("review_entries")
