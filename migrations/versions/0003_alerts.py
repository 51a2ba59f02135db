"""Early warning: subscriptions, alerts and their delivery outbox (issue 8).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('webhooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_webhooks_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks')),
    sa.UniqueConstraint('institution_id', name=op.f('uq_webhooks_institution_id'))
    )
    op.create_table('subscriptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('borrower_index', sa.LargeBinary(length=32), nullable=False),
    sa.Column('national_id_masked', sa.String(length=18), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('end_reason', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_subscriptions_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriptions')),
    sa.UniqueConstraint('ref', name=op.f('uq_subscriptions_ref'))
    )
    op.create_index(op.f('ix_subscriptions_borrower_index'), 'subscriptions', ['borrower_index'], unique=False)
    op.create_index(op.f('ix_subscriptions_institution_id'), 'subscriptions', ['institution_id'], unique=False)
    # At most one live subscription per member and borrower: a partial unique index, which
    # both SQLite and PostgreSQL support with the same predicate.
    op.create_index('uq_subscriptions_live', 'subscriptions', ['institution_id', 'borrower_index'], unique=True,
                    sqlite_where=sa.text('ended_at IS NULL'), postgresql_where=sa.text('ended_at IS NULL'))
    op.create_table('alert_streams',
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_alert_streams_institution_id_institutions')),
    sa.PrimaryKeyConstraint('institution_id', name=op.f('pk_alert_streams'))
    )
    op.create_table('alerts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=32), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=True),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('delinquency_id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['delinquency_id'], ['delinquencies.id'], name=op.f('fk_alerts_delinquency_id_delinquencies'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_alerts_institution_id_institutions')),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'], name=op.f('fk_alerts_subscription_id_subscriptions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts')),
    sa.UniqueConstraint('event_id', name=op.f('uq_alerts_event_id')),
    sa.UniqueConstraint('institution_id', 'seq', name=op.f('uq_alerts_institution_id_seq'))
    )
    op.create_index(op.f('ix_alerts_delinquency_id'), 'alerts', ['delinquency_id'], unique=False)
    op.create_index(op.f('ix_alerts_occurred_at'), 'alerts', ['occurred_at'], unique=False)
    op.create_index(op.f('ix_alerts_subscription_id'), 'alerts', ['subscription_id'], unique=False)
    op.create_table('alert_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('alert_id', sa.Integer(), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claim', sa.String(length=32), nullable=True),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=64), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('dead_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], name=op.f('fk_alert_deliveries_alert_id_alerts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_alert_deliveries_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_deliveries')),
    sa.UniqueConstraint('alert_id', name=op.f('uq_alert_deliveries_alert_id'))
    )
    op.create_index('ix_alert_deliveries_due', 'alert_deliveries', ['state', 'next_attempt_at'], unique=False)
    op.create_index(op.f('ix_alert_deliveries_institution_id'), 'alert_deliveries', ['institution_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_alert_deliveries_institution_id'), table_name='alert_deliveries')
    op.drop_index('ix_alert_deliveries_due', table_name='alert_deliveries')
    op.drop_table('alert_deliveries')
    op.drop_index(op.f('ix_alerts_subscription_id'), table_name='alerts')
    op.drop_index(op.f('ix_alerts_occurred_at'), table_name='alerts')
    op.drop_index(op.f('ix_alerts_delinquency_id'), table_name='alerts')
    op.drop_table('alerts')
    op.drop_table('alert_streams')
    op.drop_index('uq_subscriptions_live', table_name='subscriptions')
    op.drop_index(op.f('ix_subscriptions_institution_id'), table_name='subscriptions')
    op.drop_index(op.f('ix_subscriptions_borrower_index'), table_name='subscriptions')
    op.drop_table('subscriptions')
    op.drop_table('webhooks')
