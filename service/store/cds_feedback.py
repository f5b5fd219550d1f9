"""CDS Hooks cards the service issued and what clinicians did with them (issue 15 item 8).

Why two tables: a feedback call names only the card's uuid, so the uuid of every card issued
is kept with its patient (`cds_cards`); the feedback (`cds_feedback`) is append-only like a
coordinator's entries (who, when, outcome, reason) and apart from the results, so a re-screen
never touches it. A feedback for a uuid this service never issued is kept without a patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from service.store.base import StoreBase
from service.store.models import PATIENT_ID_LENGTH, STATE_LENGTH, Base, BigId, UTCDateTime

UUID_LENGTH = 36


class CdsCard(Base):
    """A card the service returned to an EHR: its uuid, the patient, the status it said."""

    __tablename__ = "cds_cards"

    uuid: Mapped[str] = mapped_column(String(UUID_LENGTH), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(PATIENT_ID_LENGTH))
    study: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(STATE_LENGTH))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CdsFeedback(Base):
    """One feedback entry: the card, its outcome (accepted / overridden), the coded reason and
    the clinician's comment (free text: kept here, never in logs), who sent it (the EHR
    token's subject), when the clinician acted (the EHR's time) and when it was recorded."""

    __tablename__ = "cds_feedback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    card_uuid: Mapped[str] = mapped_column(String(UUID_LENGTH))
    patient_id: Mapped[str | None] = mapped_column(String(PATIENT_ID_LENGTH))
    outcome: Mapped[str] = mapped_column(String(STATE_LENGTH))
    reason_code: Mapped[str | None] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(255))
    outcome_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("outcome IN ('accepted', 'overridden')", name="outcome"),
        Index("ix_cds_feedback_patient_id", "patient_id"),
    )


@dataclass(frozen=True)
class CardFeedback:
    card: str
    patient_id: str | None
    outcome: str
    reason_code: str | None
    comment: str | None
    author: str
    outcome_at: datetime
    recorded_at: datetime


class CdsFeedbackStore(StoreBase):
    """The cards issued and their feedback over the shared sessions."""

    def issue_card(self, uuid: str, patient: str, study: str, status: str) -> None:
        with self._write() as session:
            session.add(CdsCard(uuid=uuid, patient_id=patient, study=study, status=status,
                                issued_at=self._now()))  # fmt: skip

    def record_card_feedback(
        self, card: str, outcome: str, *, author: str, outcome_at: datetime,
        reason_code: str | None = None, comment: str | None = None,
    ) -> CardFeedback:  # fmt: skip
        """Keep one feedback entry, joined to the card's patient when the card is ours."""
        with self._write() as session:
            issued = session.get(CdsCard, card)
            row = CdsFeedback(
                card_uuid=card, patient_id=issued.patient_id if issued else None,
                outcome=outcome, reason_code=reason_code, comment=comment, author=author,
                outcome_at=outcome_at, recorded_at=self._now(),
            )  # fmt: skip
            session.add(row)
            session.flush()
            return _feedback(row)

    def card_feedback(self, patient: str) -> list[CardFeedback]:
        """A patient's card feedback, newest first."""
        query = (
            select(CdsFeedback)
            .where(CdsFeedback.patient_id == patient)
            .order_by(CdsFeedback.id.desc())
        )
        with self._read() as session:
            return [_feedback(row) for row in session.scalars(query)]


def _feedback(row: CdsFeedback) -> CardFeedback:
    return CardFeedback(row.card_uuid, row.patient_id, row.outcome, row.reason_code,
                        row.comment, row.author, row.outcome_at, row.recorded_at)  # fmt: skip
