"""Borrower portal: sign-in codes, sessions, notifications (issue 5).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('audience', sa.String(length=16), nullable=False),
    sa.Column('template', sa.String(length=32), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=True),
    sa.Column('data_key_id', sa.Integer(), nullable=True),
    sa.Column('message_ct', sa.LargeBinary(), nullable=True),
    sa.Column('message', sa.String(length=4000), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['data_key_id'], ['data_keys.id'], name=op.f('fk_notifications_data_key_id_data_keys')),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_notifications_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('ref', name=op.f('uq_notifications_ref'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notifications_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_notifications_institution_id'), ['institution_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notifications_next_attempt_at'), ['next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_notifications_state'), ['state'], unique=False)

    op.create_table('signin_codes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('borrower_index', sa.LargeBinary(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('code_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('spent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signin_codes'))
    )
    with op.batch_alter_table('signin_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signin_codes_borrower_index'), ['borrower_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_signin_codes_expires_at'), ['expires_at'], unique=False)

    op.create_table('signin_counters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.LargeBinary(length=32), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signin_counters')),
    sa.UniqueConstraint('scope', 'subject', name=op.f('uq_signin_counters_scope_subject'))
    )
    with op.batch_alter_table('signin_counters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signin_counters_window_start'), ['window_start'], unique=False)

    op.create_table('borrower_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('borrower_index', sa.LargeBinary(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_borrower_sessions')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_borrower_sessions_token_hash'))
    )
    with op.batch_alter_table('borrower_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_borrower_sessions_borrower_index'), ['borrower_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_borrower_sessions_expires_at'), ['expires_at'], unique=False)

    op.create_table('borrower_enrolments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('borrower_index', sa.LargeBinary(length=32), nullable=False),
    sa.Column('data_key_id', sa.Integer(), nullable=False),
    sa.Column('phone_ct', sa.LargeBinary(), nullable=True),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['data_key_id'], ['data_keys.id'], name=op.f('fk_borrower_enrolments_data_key_id_data_keys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_borrower_enrolments')),
    sa.UniqueConstraint('borrower_index', name=op.f('uq_borrower_enrolments_borrower_index')),
    sa.UniqueConstraint('ref', name=op.f('uq_borrower_enrolments_ref'))
    )


def downgrade() -> None:
    op.drop_table('borrower_enrolments')
    with op.batch_alter_table('borrower_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_borrower_sessions_expires_at'))
        batch_op.drop_index(batch_op.f('ix_borrower_sessions_borrower_index'))

    op.drop_table('borrower_sessions')
    with op.batch_alter_table('signin_counters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signin_counters_window_start'))

    op.drop_table('signin_counters')
    with op.batch_alter_table('signin_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signin_codes_expires_at'))
        batch_op.drop_index(batch_op.f('ix_signin_codes_borrower_index'))

    op.drop_table('signin_codes')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notifications_state'))
        batch_op.drop_index(batch_op.f('ix_notifications_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_notifications_institution_id'))
        batch_op.drop_index(batch_op.f('ix_notifications_expires_at'))

    op.drop_table('notifications')
