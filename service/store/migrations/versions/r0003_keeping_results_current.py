"""Keeping results current (issue 14): the re-screen queue, cohorts, sweep watermarks,
scheduled firings, and why each result was screened and what it changed.

* `rescreen_queue`: one row per patient waiting for a screen or being screened, whatever
  noticed the change (a subscription, a sweep, a schedule, a request): a burst of changes is
  one row, so one screen; see service.store.rescreen.
* `cohorts` / `cohort_members`: the screening population, each cohort a FHIR search, a
  Group or a list, with the cron schedule of its re-screens.
* `watermarks`: per resource type, how far the incremental sweep got (server clock) and
  when it last ran (service clock); they survive restarts.
* `schedule_fires`: a scheduled job fires once across every process on one database: the
  process whose insert of (job, fire time) succeeds runs it.
* `results.previous_status` / `changed_criteria` / `trigger` / `source`: what the changes
  feed says about an entry. Nullable: results recorded before this revision have none.

Plain ADD COLUMN and new tables only (no batch mode): see revision 0002 on why a table copy
on SQLite is avoided.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.migrations.columns import JSON_DOCUMENT, TIMESTAMP

revision = "0003"
down_revision: str | None = "0002"

PATIENT_ID = sa.String(255)
STATE = sa.String(16)
OWNER = sa.String(64)


def upgrade() -> None:
    op.add_column("results", sa.Column("previous_status", STATE, nullable=True))
    op.add_column("results", sa.Column("changed_criteria", JSON_DOCUMENT, nullable=True))
    op.add_column("results", sa.Column("trigger", STATE, nullable=True))
    op.add_column("results", sa.Column("source", sa.Text(), nullable=True))

    op.create_table(
        "rescreen_queue",
        sa.Column("patient_id", PATIENT_ID, nullable=False),
        sa.Column("state", STATE, nullable=False),
        sa.Column("due_at", TIMESTAMP, nullable=False),
        sa.Column("first_enqueued_at", TIMESTAMP, nullable=False),
        sa.Column("last_enqueued_at", TIMESTAMP, nullable=False),
        sa.Column("triggers", JSON_DOCUMENT, nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("again", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", OWNER, nullable=True),
        sa.Column("lease_expires_at", TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("patient_id", name="pk_rescreen_queue"),
        sa.CheckConstraint("state IN ('pending', 'claimed')", name="ck_rescreen_queue_state"),
    )
    op.create_index("ix_rescreen_queue_state_due_at", "rescreen_queue", ["state", "due_at"])
    op.create_index(
        "ix_rescreen_queue_state_lease_expires_at", "rescreen_queue", ["state", "lease_expires_at"]
    )

    op.create_table(
        "cohorts",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", STATE, nullable=False),
        sa.Column("spec", JSON_DOCUMENT, nullable=False),
        sa.Column(
            "schedule", sa.String(120), nullable=False, server_default=sa.text("'0 2 * * *'")
        ),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cohorts"),
        sa.CheckConstraint("kind IN ('search', 'group', 'list')", name="ck_cohorts_kind"),
    )
    op.create_table(
        "cohort_members",
        sa.Column("cohort", sa.String(64), nullable=False),
        sa.Column("patient_id", PATIENT_ID, nullable=False),
        sa.Column("refreshed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("cohort", "patient_id", name="pk_cohort_members"),
        sa.ForeignKeyConstraint(
            ["cohort"],
            ["cohorts.name"],
            name="fk_cohort_members_cohort_cohorts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_cohort_members_patient_id", "cohort_members", ["patient_id"])

    op.create_table(
        "watermarks",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("last_updated", TIMESTAMP, nullable=True),
        sa.Column("swept_at", TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("resource_type", name="pk_watermarks"),
    )

    op.create_table(
        "schedule_fires",
        sa.Column("job", sa.String(128), nullable=False),
        sa.Column("fire_at", TIMESTAMP, nullable=False),
        sa.Column("fired_by", OWNER, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("job", "fire_at", name="pk_schedule_fires"),
    )


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_table("watermarks")
    op.drop_index("ix_cohort_members_patient_id", table_name="cohort_members")
    op.drop_table("cohort_members")
    op.drop_table("cohorts")
    op.drop_index("ix_rescreen_queue_state_lease_expires_at", table_name="rescreen_queue")
    op.drop_index("ix_rescreen_queue_state_due_at", table_name="rescreen_queue")
    op.drop_table("rescreen_queue")
    # SQLite 3.35+ drops a column in place (no table copy, so no cascade)
    op.drop_column("results", "source")
    op.drop_column("results", "trigger")
    op.drop_column("results", "changed_criteria")
    op.drop_column("results", "previous_status")
