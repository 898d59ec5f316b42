"""Image URLs remembered with their validators, so re-runs re-fetch them conditionally.

`image_sources` keeps, per image URL, the ETag and Last-Modified it was served with and the
sha256 of that body (with its media copy and size): a re-run sends If-None-Match /
If-Modified-Since, a 304 costs no download and no embedding, and a changed body changes the
product's fingerprint so that exactly that product is embedded again.

Revision ID: 0004_image_sources
Revises: 0003_prices_and_image_retries
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_image_sources"
down_revision: str | Sequence[str] | None = "0003_prices_and_image_retries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "image_sources",
        sa.Column("url_key", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("etag", sa.String(500), nullable=True),
        sa.Column("last_modified", sa.String(100), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("media_path", sa.String(300), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("url_key"),
    )


def downgrade() -> None:
    op.drop_table("image_sources")
