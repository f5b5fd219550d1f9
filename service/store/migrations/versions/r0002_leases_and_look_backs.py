"""Claim leases with an owner (two processes, one database) and look-back runs.

* `run_patients.claimed_by` / `lease_expires_at`: a claimed patient names the service process
  that holds it and until when; the holder renews the lease by a heartbeat, and another
  process takes the patient only once the lease has run out (or its owner is known dead).
  Before this, a claim was judged stale by the age of `claimed_at` against the start time of
  whichever process looked, so a second process started on the same database took the live
  claims of the first and screened those patients twice.
* `runs.look_back`: a run whose `as_of` was before the service's date when it was asked for.
  Its results are kept with the run but never replace a patient's current result, never
  enter the changes feed and are never written back (fhir-contract.md, "What the current
  result is").

Claims made before this revision have no owner and no lease: they count as expired, which
is what the old code did with them at the next start.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.migrations.columns import TIMESTAMP

revision = "0002"
down_revision: str | None = "0001"


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: SQLite adds these columns in place, while a batch
    # "move and copy" of `runs` would drop the old table, and with foreign keys on, the
    # cascade would delete every run's patients.
    op.add_column(
        "runs", sa.Column("look_back", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("run_patients", sa.Column("claimed_by", sa.String(64), nullable=True))
    op.add_column("run_patients", sa.Column("lease_expires_at", TIMESTAMP, nullable=True))
    # expired-lease scans: the claimed patients by lease end
    op.create_index(
        "ix_run_patients_state_lease_expires_at", "run_patients", ["state", "lease_expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_run_patients_state_lease_expires_at", table_name="run_patients")
    # SQLite 3.35+ drops a column in place (no table copy, so no cascade)
    op.drop_column("run_patients", "lease_expires_at")
    op.drop_column("run_patients", "claimed_by")
    op.drop_column("runs", "look_back")
