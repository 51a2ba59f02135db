"""Initial schema: members and keys, nonces, data keys, borrowers, records, reports, tombstones.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 21:31:11.740671
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('data_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('master_version', sa.Integer(), nullable=False),
    sa.Column('wrapped', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_keys')),
    sa.UniqueConstraint('ref', name=op.f('uq_data_keys_ref'))
    )
    op.create_table('institutions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('suspended_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_institutions')),
    sa.UniqueConstraint('code', name=op.f('uq_institutions_code'))
    )
    op.create_table('request_nonces',
    sa.Column('keyid', sa.String(length=64), nullable=False),
    sa.Column('nonce', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('keyid', 'nonce', name=op.f('pk_request_nonces'))
    )
    with op.batch_alter_table('request_nonces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_request_nonces_expires_at'), ['expires_at'], unique=False)

    op.create_table('borrowers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('id_index', sa.LargeBinary(length=32), nullable=False),
    sa.Column('data_key_id', sa.Integer(), nullable=False),
    sa.Column('national_id_ct', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['data_key_id'], ['data_keys.id'], name=op.f('fk_borrowers_data_key_id_data_keys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_borrowers')),
    sa.UniqueConstraint('id_index', name=op.f('uq_borrowers_id_index')),
    sa.UniqueConstraint('ref', name=op.f('uq_borrowers_ref'))
    )
    op.create_table('clearance_certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('borrower_index', sa.LargeBinary(length=32), nullable=False),
    sa.Column('data_key_id', sa.Integer(), nullable=False),
    sa.Column('certificate_ct', sa.LargeBinary(), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['data_key_id'], ['data_keys.id'], name=op.f('fk_clearance_certificates_data_key_id_data_keys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clearance_certificates')),
    sa.UniqueConstraint('ref', name=op.f('uq_clearance_certificates_ref'))
    )
    with op.batch_alter_table('clearance_certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clearance_certificates_borrower_index'), ['borrower_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_clearance_certificates_expires_at'), ['expires_at'], unique=False)

    op.create_table('compliance_violations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('rule', sa.String(length=64), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_compliance_violations_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_compliance_violations'))
    )
    with op.batch_alter_table('compliance_violations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_compliance_violations_institution_id'), ['institution_id'], unique=False)

    op.create_table('member_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('keyid', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_member_keys_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member_keys')),
    sa.UniqueConstraint('keyid', name=op.f('uq_member_keys_keyid'))
    )
    with op.batch_alter_table('member_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_member_keys_institution_id'), ['institution_id'], unique=False)

    op.create_table('tombstones',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('account_index', sa.LargeBinary(length=32), nullable=True),
    sa.Column('last_sequence', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_tombstones_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tombstones'))
    )
    with op.batch_alter_table('tombstones', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tombstones_account_index'), ['account_index'], unique=False)
        batch_op.create_index(batch_op.f('ix_tombstones_cleared_at'), ['cleared_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_tombstones_institution_id'), ['institution_id'], unique=False)

    op.create_table('delinquencies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ref', sa.String(length=32), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('account_index', sa.LargeBinary(length=32), nullable=False),
    sa.Column('borrower_id', sa.Integer(), nullable=False),
    sa.Column('data_key_id', sa.Integer(), nullable=False),
    sa.Column('account_ref_ct', sa.LargeBinary(), nullable=False),
    sa.Column('name_ct', sa.LargeBinary(), nullable=False),
    sa.Column('phone_ct', sa.LargeBinary(), nullable=False),
    sa.Column('address_ct', sa.LargeBinary(), nullable=True),
    sa.Column('product', sa.String(length=32), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('overdue_principal', sa.BigInteger(), nullable=False),
    sa.Column('overdue_interest', sa.BigInteger(), nullable=False),
    sa.Column('penalty', sa.BigInteger(), nullable=False),
    sa.Column('days_past_due', sa.Integer(), nullable=False),
    sa.Column('first_delinquency_date', sa.Date(), nullable=False),
    sa.Column('as_of_date', sa.Date(), nullable=False),
    sa.Column('contact_status', sa.String(length=16), nullable=False),
    sa.Column('lost_contact_since', sa.Date(), nullable=True),
    sa.Column('channels_tried', sa.String(length=200), nullable=False),
    sa.Column('collection_stage', sa.String(length=32), nullable=False),
    sa.Column('classification', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('settled_on', sa.Date(), nullable=True),
    sa.Column('settlement_type', sa.String(length=16), nullable=True),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['borrower_id'], ['borrowers.id'], name=op.f('fk_delinquencies_borrower_id_borrowers')),
    sa.ForeignKeyConstraint(['data_key_id'], ['data_keys.id'], name=op.f('fk_delinquencies_data_key_id_data_keys')),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_delinquencies_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delinquencies')),
    sa.UniqueConstraint('institution_id', 'account_index', name=op.f('uq_delinquencies_institution_id_account_index')),
    sa.UniqueConstraint('ref', name=op.f('uq_delinquencies_ref'))
    )
    with op.batch_alter_table('delinquencies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delinquencies_borrower_id'), ['borrower_id'], unique=False)

    op.create_table('reports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('institution_id', sa.Integer(), nullable=False),
    sa.Column('report_id', sa.String(length=64), nullable=False),
    sa.Column('delinquency_id', sa.Integer(), nullable=False),
    sa.Column('sequence', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('envelope_sha256', sa.String(length=64), nullable=False),
    sa.Column('envelope_ct', sa.LargeBinary(), nullable=False),
    sa.Column('receipt', sa.LargeBinary(), nullable=False),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['delinquency_id'], ['delinquencies.id'], name=op.f('fk_reports_delinquency_id_delinquencies'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['institution_id'], ['institutions.id'], name=op.f('fk_reports_institution_id_institutions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reports')),
    sa.UniqueConstraint('institution_id', 'report_id', name=op.f('uq_reports_institution_id_report_id'))
    )
    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reports_delinquency_id'), ['delinquency_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reports_delinquency_id'))

    op.drop_table('reports')
    with op.batch_alter_table('delinquencies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delinquencies_borrower_id'))

    op.drop_table('delinquencies')
    with op.batch_alter_table('tombstones', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tombstones_institution_id'))
        batch_op.drop_index(batch_op.f('ix_tombstones_cleared_at'))
        batch_op.drop_index(batch_op.f('ix_tombstones_account_index'))

    op.drop_table('tombstones')
    with op.batch_alter_table('member_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_member_keys_institution_id'))

    op.drop_table('member_keys')
    with op.batch_alter_table('compliance_violations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_compliance_violations_institution_id'))

    op.drop_table('compliance_violations')
    with op.batch_alter_table('clearance_certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clearance_certificates_expires_at'))
        batch_op.drop_index(batch_op.f('ix_clearance_certificates_borrower_index'))

    op.drop_table('clearance_certificates')
    op.drop_table('borrowers')
    with op.batch_alter_table('request_nonces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_request_nonces_expires_at'))

    op.drop_table('request_nonces')
    op.drop_table('institutions')
    op.drop_table('data_keys')
