"""Operators, consents, inquiries and their daily quota, disputes, borrower statements.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:49:07.844280
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('operators',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('keyid', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_operators')),
    sa.UniqueConstraint('keyid', name=op.f('uq_operators_keyid')),
    sa.UniqueConstraint('name', name=op.f('uq_operators_name'))
    )
    op.create_table('consents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('borrower_index', sa.LargeBinary(length=32), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('code_hash', sa.LargeBinary(length=32), nullable=True),
    sa.Column('reference', sa.String(length=64), nullable=True),
    sa.Column('form_sha256', sa.String(length=64), nullable=True),
    sa.Column('signed_on', sa.Date(), nullable=True),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_consents_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consents')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_consents_code_hash')),
    sa.UniqueConstraint('ref', name=op.f('uq_consents_ref'))
    )
    with op.batch_alter_table('consents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consents_borrower_index'), ['borrower_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_consents_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_consents_institution_id'), ['institution_id'], unique=False)

    op.create_table('quota_usage',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_quota_usage_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quota_usage')),
    sa.UniqueConstraint('institution_id', 'day', name=op.f('uq_quota_usage_institution_id_day'))
    )
    op.create_table('inquiries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('borrower_index', sa.LargeBinary(length=32), nullable=True),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('consent_kind', sa.String(length=32), nullable=False),
    sa.Column('consent_reference', sa.String(length=64), nullable=True),
    sa.Column('consent_id', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('refusal_code', sa.String(length=64), nullable=True),
    sa.Column('data_key_id', sa.Integer(), nullable=True),
    sa.Column('request_ct', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['consent_id'], ['consents.id'], name=op.f('fk_inquiries_consent_id_consents'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['data_key_id'], ['data_keys.id'], name=op.f('fk_inquiries_data_key_id_data_keys')),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_inquiries_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inquiries')),
    sa.UniqueConstraint('ref', name=op.f('uq_inquiries_ref'))
    )
    with op.batch_alter_table('inquiries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inquiries_borrower_index'), ['borrower_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_inquiries_consent_id'), ['consent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_inquiries_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_inquiries_institution_id'), ['institution_id'], unique=False)

    op.create_table('borrower_statements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('borrower_index', sa.LargeBinary(length=32), nullable=False),
    sa.Column('delinquency_id', sa.Integer(), nullable=True),
    sa.Column('data_key_id', sa.Integer(), nullable=False),
    sa.Column('text_ct', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['data_key_id'], ['data_keys.id'], name=op.f('fk_borrower_statements_data_key_id_data_keys')),
    sa.ForeignKeyConstraint(['delinquency_id'], ['delinquencies.id'], name=op.f('fk_borrower_statements_delinquency_id_delinquencies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_borrower_statements')),
    sa.UniqueConstraint('ref', name=op.f('uq_borrower_statements_ref'))
    )
    with op.batch_alter_table('borrower_statements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_borrower_statements_borrower_index'), ['borrower_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_borrower_statements_delinquency_id'), ['delinquency_id'], unique=False)

    op.create_table('disputes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('delinquency_id', sa.Integer(), nullable=False),
    sa.Column('borrower_index', sa.LargeBinary(length=32), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('data_key_id', sa.Integer(), nullable=False),
    sa.Column('text_ct', sa.LargeBinary(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('answer', sa.String(length=16), nullable=True),
    sa.Column('answer_note_ct', sa.LargeBinary(), nullable=True),
    sa.Column('filed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['data_key_id'], ['data_keys.id'], name=op.f('fk_disputes_data_key_id_data_keys')),
    sa.ForeignKeyConstraint(['delinquency_id'], ['delinquencies.id'], name=op.f('fk_disputes_delinquency_id_delinquencies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_disputes')),
    sa.UniqueConstraint('ref', name=op.f('uq_disputes_ref'))
    )
    with op.batch_alter_table('disputes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_disputes_borrower_index'), ['borrower_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_disputes_delinquency_id'), ['delinquency_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_disputes_due_at'), ['due_at'], unique=False)

    with op.batch_alter_table('delinquencies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('suppressed_at', sa.DateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('delinquencies', schema=None) as batch_op:
        batch_op.drop_column('suppressed_at')

    with op.batch_alter_table('disputes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_disputes_due_at'))
        batch_op.drop_index(batch_op.f('ix_disputes_delinquency_id'))
        batch_op.drop_index(batch_op.f('ix_disputes_borrower_index'))

    op.drop_table('disputes')
    with op.batch_alter_table('borrower_statements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_borrower_statements_delinquency_id'))
        batch_op.drop_index(batch_op.f('ix_borrower_statements_borrower_index'))

    op.drop_table('borrower_statements')
    with op.batch_alter_table('inquiries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inquiries_institution_id'))
        batch_op.drop_index(batch_op.f('ix_inquiries_created_at'))
        batch_op.drop_index(batch_op.f('ix_inquiries_consent_id'))
        batch_op.drop_index(batch_op.f('ix_inquiries_borrower_index'))

    op.drop_table('inquiries')
    op.drop_table('quota_usage')
    with op.batch_alter_table('consents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_consents_institution_id'))
        batch_op.drop_index(batch_op.f('ix_consents_expires_at'))
        batch_op.drop_index(batch_op.f('ix_consents_borrower_index'))

    op.drop_table('consents')
    op.drop_table('operators')
