"""Three-decimal prices (KWD, BHD, OMR, JOD, TND) and image downloads retried across runs.

`price` keeps three decimals so that a currency with three minor digits is stored exactly;
`image_failures` and `retry_after` remember a product whose image could not be fetched, so that
later runs fetch it again (with a growing pause) until it lands or the row changes.

Revision ID: 0003_prices_and_image_retries
Revises: 0002_jobs_and_meta
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_prices_and_image_retries"
down_revision: str | Sequence[str] | None = "0002_jobs_and_meta"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("products") as batch:  # SQLite rebuilds the table; PostgreSQL alters it
        batch.alter_column("price", type_=sa.Numeric(14, 3), existing_type=sa.Numeric(14, 2))
        batch.add_column(sa.Column("image_failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_after", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.drop_column("retry_after")
        batch.drop_column("image_failures")
        batch.alter_column("price", type_=sa.Numeric(14, 2), existing_type=sa.Numeric(14, 3))
