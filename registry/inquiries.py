"""Inquiries: a member looks at a borrower's history, for a declared purpose, and it is logged.

Order matters. The daily quota is checked first, so a member past its quota learns nothing
else (a member cannot probe for free). Then the request is validated, the purpose and consent
checked, the history assembled and signed, and the quota taken and the inquiry logged with the
signed request as evidence, all in one transaction (one commit). A refusal is logged as well
(for the operator) and counted against the quota, after rolling back anything the attempt had
begun: nothing of a refused inquiry but its log row and its count stays behind.

The quota is taken atomically at the end (a conditional ``UPDATE``), so the row is locked only
for the last moment of the transaction, not for the whole inquiry; an attempt that loses the
last unit of quota to a concurrent one in between is refused with 429 like any other.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import json
import secrets
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import ScalarSelect, Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, sessionmaker

from crypto import dsse, strictjson
from crypto.errors import StrictJSONError
from registry import consents, disputes, masking, relationships, statements
from registry.classification import Tier, worst
from registry.errors import (
    FieldError,
    Forbidden,
    MalformedReport,
    RateLimited,
    RegistryError,
    ValidationFailed,
)
from registry.fields import Collector, choice, date_value, json_object, national_id_value, string
from registry.models import (
    Borrower,
    DataKey,
    Delinquency,
    Inquiry,
    Institution,
    QuotaUsage,
)
from registry.policy import Policy
from registry.records import record_fields
from registry.secrets import KeyMaterial
from registry.vault import Vault

STATEMENT_PAYLOAD_TYPE = "application/vnd.delinquency-registry.history+json;version=1"
REQUEST_FIELDS = frozenset({"national_id", "purpose", "consent"})
CODE_CONSENT_FIELDS = frozenset({"kind", "code"})
WRITTEN_CONSENT_FIELDS = frozenset({"kind", "reference", "form_sha256", "signed_on"})


class Purpose(enum.StrEnum):
    """The permissible purposes (the PBOC report's inquiry reasons that apply to members)."""

    CREDIT_APPLICATION = "credit_application"
    ACCOUNT_REVIEW = "account_review"
    COLLECTION = "collection"


class ConsentKind(enum.StrEnum):
    CONSENT_CODE = consents.KIND_CODE
    WRITTEN_AUTHORIZATION = consents.KIND_WRITTEN


class Basis(enum.StrEnum):
    """What the registry accepted as the member's reason to look: kept in the inquiry log."""

    CONSENT_CODE = consents.KIND_CODE
    WRITTEN_AUTHORIZATION = consents.KIND_WRITTEN
    LIVE_CONSENT = "live_consent"
    OWN_RECORD = "own_record"
    OPEN_DELINQUENCY = "open_delinquency"
    NONE = "none"


@dataclass(frozen=True)
class ConsentClaim:
    kind: ConsentKind
    code: str | None = None
    reference: str | None = None
    form_sha256: str | None = None
    signed_on: dt.date | None = None

    def __repr__(self) -> str:
        return f"ConsentClaim(kind={self.kind.value}, <redacted>)"


@dataclass(frozen=True)
class InquiryRequest:
    national_id: str
    purpose: Purpose
    consent: ConsentClaim | None

    def __repr__(self) -> str:
        return f"InquiryRequest(purpose={self.purpose.value}, <redacted>)"


@dataclass(frozen=True)
class _Facts:
    """What ``_look_up`` read: the member's relationship to the borrower and what to show."""

    own_record: bool
    open_delinquency: bool
    recent_30d: int
    recent_90d: int
    any_statement: bool
    records: list[Delinquency]
    disputed: set[int]


@dataclass(frozen=True)
class InquiryAnswer:
    inquiry_id: str
    statement: bytes


# --- the statements of an inquiry, built once ---------------------------------------------
# NOTE: building an SQLAlchemy statement costs about as much as running it, and every inquiry
# runs these. All but the look-up (whose records are ORM objects) run on the session's
# connection, without the ORM's per-statement work.

_QUOTA_USED = select(QuotaUsage.used).where(
    QuotaUsage.institution_id == bindparam("member"), QuotaUsage.day == bindparam("today")
)
_QUOTA_ROW = select(QuotaUsage.id).where(
    QuotaUsage.institution_id == bindparam("member"), QuotaUsage.day == bindparam("today")
)
_TAKE_QUOTA = (
    update(QuotaUsage)
    .where(
        QuotaUsage.institution_id == bindparam("member"),
        QuotaUsage.day == bindparam("today"),
        QuotaUsage.used < bindparam("quota"),
    )
    .values(used=QuotaUsage.used + 1)
)
_COUNT_ATTEMPT = (
    update(QuotaUsage)
    .where(QuotaUsage.institution_id == bindparam("member"), QuotaUsage.day == bindparam("today"))
    .values(used=QuotaUsage.used + 1)
)


def _credit_applications_since(name: str) -> ScalarSelect[int]:
    """Answered credit-application inquiries on the borrower, by any member, since ``name``."""
    return (
        select(func.count())
        .where(
            Inquiry.borrower_index == bindparam("borrower_index"),
            Inquiry.purpose == Purpose.CREDIT_APPLICATION.value,
            Inquiry.outcome == "answered",
            Inquiry.created_at >= bindparam(name),
        )
        .scalar_subquery()
    )


# Everything an inquiry reads, in one round trip: the quota used today, the borrower's id, the
# member's relationship to the borrower (the rules of ``relationships``), recent credit
# applications and whether there is any borrower statement to open (one row, ``_FACTS``),
# joined to the records an inquirer is shown, each with its data key and dispute flag.
_FACTS = select(
    _QUOTA_USED.scalar_subquery().label("quota_used"),
    select(Borrower.id)
    .where(Borrower.id_index == bindparam("borrower_index"))
    .scalar_subquery()
    .label("borrower_id"),
    relationships.own_record(bindparam("member"), bindparam("borrower_index")).label("own_record"),
    relationships.open_delinquency(bindparam("member"), bindparam("borrower_index")).label(
        "open_delinquency"
    ),
    _credit_applications_since("since_30d").label("recent_30d"),
    _credit_applications_since("since_90d").label("recent_90d"),
    statements.any_statement(bindparam("borrower_index")).label("any_statement"),
).subquery("facts")
_LOOK_UP = (
    select(_FACTS, Delinquency, disputes.under_dispute(Delinquency.id).label("under_dispute"))
    .select_from(_FACTS)
    .outerjoin(
        Delinquency,
        and_(Delinquency.borrower_id == _FACTS.c.borrower_id, Delinquency.suppressed_at.is_(None)),
    )
    # each record is decrypted and names its member (another member's is not in the session)
    .options(joinedload(Delinquency.data_key), joinedload(Delinquency.institution))
    .order_by(Delinquency.first_delinquency_date, Delinquency.id)
)
_DATA_KEYS = cast(Table, DataKey.__table__)
_INSERT_KEY = insert(_DATA_KEYS).returning(_DATA_KEYS.c.id)
_INSERT_INQUIRY = insert(cast(Table, Inquiry.__table__))


def parse_request(raw: bytes) -> InquiryRequest:
    """Strict JSON, every broken rule named at once; messages never echo the values."""
    try:
        document = strictjson.loads_strict(raw)
    except StrictJSONError as exc:
        raise MalformedReport(
            "the body is not acceptable JSON",
            code="body_malformed",
            errors=[FieldError("body", exc.rule, exc.detail)],
        ) from None
    c = Collector()
    if not isinstance(document, dict):
        raise ValidationFailed(
            "the body must be a JSON object",
            errors=[FieldError("body", "type_object", "must be an object")],
        )
    c.unknown(document, REQUEST_FIELDS, "")
    nid = c.take(document, "national_id", "", national_id_value)
    purpose = c.take(document, "purpose", "", choice(Purpose))
    consent = _consent(c, document)
    if purpose is Purpose.CREDIT_APPLICATION and consent is None and "consent" not in document:
        c.add(
            "consent",
            "required_for_credit_application",
            "a credit application needs the borrower's consent code or written authorization",
        )
    if c.errors or nid is None or purpose is None:
        raise ValidationFailed("the inquiry is not valid", errors=c.errors)
    return InquiryRequest(national_id=nid, purpose=purpose, consent=consent)


def _consent(c: Collector, document: dict[str, Any]) -> ConsentClaim | None:
    body = c.take(document, "consent", "", json_object, required=False)
    if body is None:
        return None
    kind = c.take(body, "kind", "consent.", choice(ConsentKind))
    if kind is ConsentKind.CONSENT_CODE:
        c.unknown(body, CODE_CONSENT_FIELDS, "consent.")
        code = c.take(body, "code", "consent.", string(max_len=32))
        return None if code is None else ConsentClaim(kind, code=code)
    if kind is ConsentKind.WRITTEN_AUTHORIZATION:
        c.unknown(body, WRITTEN_CONSENT_FIELDS, "consent.")
        reference = c.take(body, "reference", "consent.", string(max_len=64))
        digest = c.take(body, "form_sha256", "consent.", string(max_len=64))
        signed_on = c.take(body, "signed_on", "consent.", date_value)
        if reference is None or digest is None or signed_on is None:
            return None
        return ConsentClaim(kind, reference=reference, form_sha256=digest, signed_on=signed_on)
    return None


class Inquiries:
    """Answers members' inquiries and keeps the inquiry log."""

    def __init__(
        self,
        material: KeyMaterial,
        policy: Policy,
        *,
        observer: Callable[[str, str], None] | None = None,
    ) -> None:
        """``observer(purpose, outcome)`` hears of every logged inquiry once it is committed."""
        self._material = material
        self._policy = policy
        self._vault = Vault(material.keyring)
        self._observer = observer or (lambda _purpose, _outcome: None)

    def borrower_index(self, national_id: str) -> bytes:
        return self._material.blind_index.digest("national_id", national_id)

    def inquire(
        self,
        session: Session,
        caller: Institution,
        raw: bytes,
        evidence: Mapping[str, Any],
        now: dt.datetime,
    ) -> InquiryAnswer:
        """Answer one inquiry and commit, or log the refusal, commit, and raise.

        ``evidence`` is the signed request (method, target URI, signature headers); it is
        kept encrypted with the inquiry, as is the body.
        """
        purpose_hint: str = "invalid"
        index: bytes | None = None
        try:
            try:
                request = parse_request(raw)
            except RegistryError:
                self._check_quota(session, caller, now)  # past its quota, it learns nothing
                raise
            purpose_hint = request.purpose.value
            index = self.borrower_index(request.national_id)
            facts = self._look_up(session, caller, index, now)
            basis, consent_id, consent_reference = self._authorize(
                session, caller, request, index, facts, now
            )
            ref = secrets.token_hex(16)
            document = self._history(session, caller, request, index, facts, basis, ref, now)
            statement = dsse.sign_envelope(
                STATEMENT_PAYLOAD_TYPE,
                json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(),
                self._material.signing_key,
                self._material.signing_keyid,
            )
            self._take_quota(session, caller, now)
            self._log(
                session,
                ref=ref,
                caller=caller,
                index=index,
                purpose=purpose_hint,
                basis=basis,
                consent_id=consent_id,
                consent_reference=consent_reference,
                outcome="answered",
                refusal=None,
                raw=raw,
                evidence=evidence,
                now=now,
            )
            session.commit()
            self._observer(purpose_hint, "answered")
            return InquiryAnswer(inquiry_id=ref, statement=statement)
        except RateLimited:
            session.rollback()  # quota used up, or taken by a concurrent attempt: nothing kept
            raise
        except RegistryError as exc:
            session.rollback()
            if purpose_hint == "invalid":
                purpose_hint = _purpose_hint(raw)
            self._count_attempt(session, caller, now)
            self._log(
                session,
                ref=secrets.token_hex(16),
                caller=caller,
                index=index,
                purpose=purpose_hint,
                basis=Basis.NONE,
                consent_id=None,
                consent_reference=None,
                outcome="refused",
                refusal=exc.code,
                raw=raw,
                evidence=evidence,
                now=now,
            )
            session.commit()
            self._observer(purpose_hint, "refused")
            raise
        except BaseException:
            session.rollback()
            raise

    # --- quota -------------------------------------------------------------------------

    def _check_quota(self, session: Session, caller: Institution, now: dt.datetime) -> None:
        """Refuse at once when today's quota is used up (a read: no lock, nothing written).

        For a request too broken to look anything up; a valid one is checked by ``_look_up``.
        """
        day = now.astimezone(dt.UTC).date()
        used = session.connection().execute(_QUOTA_USED, {"member": caller.id, "today": day})
        self._refuse_past_quota(session, caller, used.scalar(), day, now)

    def _look_up(
        self, session: Session, caller: Institution, index: bytes, now: dt.datetime
    ) -> _Facts:
        """Today's quota and everything else the inquiry reads (``_LOOK_UP``), in one statement.

        The quota is judged before anything else read is used, so a member past its quota
        still learns nothing.
        """
        day = now.astimezone(dt.UTC).date()
        rows = session.execute(
            _LOOK_UP,
            {
                "member": caller.id,
                "today": day,
                "borrower_index": index,
                "since_30d": now - dt.timedelta(days=30),
                "since_90d": now - dt.timedelta(days=90),
            },
        ).all()
        first = rows[0]  # the outer join keeps the look-up's row when there is no record
        self._refuse_past_quota(session, caller, first.quota_used, day, now)
        records = [row.Delinquency for row in rows if row.Delinquency is not None]
        return _Facts(
            own_record=bool(first.own_record),
            open_delinquency=bool(first.open_delinquency),
            recent_30d=int(first.recent_30d),
            recent_90d=int(first.recent_90d),
            any_statement=bool(first.any_statement),
            records=records,
            disputed={row.Delinquency.id for row in rows if row.under_dispute},
        )

    def _refuse_past_quota(
        self,
        session: Session,
        caller: Institution,
        used: int | None,
        day: dt.date,
        now: dt.datetime,
    ) -> None:
        """Roll back and raise 429 when ``used`` (None: no row yet today) is at the limit."""
        limit = self._policy.inquiry_quota(caller.code)
        if limit < 1 or (used is not None and used >= limit):
            session.rollback()
            raise self._exhausted(limit, day, now)

    def _take_quota(self, session: Session, caller: Institution, now: dt.datetime) -> None:
        """Count this inquiry against the member's daily quota, atomically across workers.

        Runs in the inquiry's own transaction, just before it is logged and committed.
        """
        limit = self._policy.inquiry_quota(caller.code)
        day = now.astimezone(dt.UTC).date()
        connection = session.connection()
        for _ in range(3):
            taken = connection.execute(
                _TAKE_QUOTA, {"member": caller.id, "today": day, "quota": limit}
            )
            if taken.rowcount:
                return
            exists = connection.execute(_QUOTA_ROW, {"member": caller.id, "today": day}).scalar()
            if exists is not None or limit < 1:
                raise self._exhausted(limit, day, now)
            try:
                with session.begin_nested():
                    session.add(QuotaUsage(institution_id=caller.id, day=day, used=1))
                return
            except IntegrityError:
                continue  # a concurrent attempt made today's row: take from it
        raise RateLimited(  # pragma: no cover - three lost races in a row
            "the inquiry quota is contended; retry", code="inquiry_quota_busy", retry_after=1
        )

    def _count_attempt(self, session: Session, caller: Institution, now: dt.datetime) -> None:
        """A refused attempt counts too, even past the limit (it was within it when checked)."""
        day = now.astimezone(dt.UTC).date()
        connection = session.connection()
        for _ in range(3):
            counted = connection.execute(_COUNT_ATTEMPT, {"member": caller.id, "today": day})
            if counted.rowcount:
                return
            try:
                with session.begin_nested():
                    session.add(QuotaUsage(institution_id=caller.id, day=day, used=1))
                return
            except IntegrityError:
                continue
        raise RateLimited(  # pragma: no cover - three lost races in a row
            "the inquiry quota is contended; retry", code="inquiry_quota_busy", retry_after=1
        )

    @staticmethod
    def _exhausted(limit: int, day: dt.date, now: dt.datetime) -> RateLimited:
        tomorrow = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
        return RateLimited(
            f"the daily inquiry quota of {limit} is used up; it renews at 00:00 UTC",
            code="inquiry_quota_exhausted",
            retry_after=max(1, int((tomorrow - now).total_seconds()) + 1),
        )

    # --- purpose and consent -----------------------------------------------------------

    def _authorize(
        self,
        session: Session,
        caller: Institution,
        request: InquiryRequest,
        index: bytes,
        facts: _Facts,
        now: dt.datetime,
    ) -> tuple[Basis, int | None, str | None]:
        """The basis on which the member may look, or ``Forbidden`` naming what is missing.

        Own and open records come from ``facts`` (``_look_up``), which asked the rules of
        ``relationships`` as part of its one statement.
        """
        claim = request.consent
        if claim is not None:
            consent = self._consent(session, caller, claim, index, now)
            return Basis(consent.kind), consent.id, consent.reference or consent.ref
        if request.purpose is Purpose.ACCOUNT_REVIEW:
            if facts.own_record:
                return Basis.OWN_RECORD, None, None
            live = relationships.live_consent(session, caller.id, index, now)
            if live is not None:
                return Basis.LIVE_CONSENT, live.id, live.reference or live.ref
            raise Forbidden(
                "account review is only for borrowers on whom the member has its own record "
                "or a live consent",
                code="no_relationship",
                errors=[FieldError("purpose", "relationship_required", "no record or consent")],
            )
        if request.purpose is Purpose.COLLECTION:
            if facts.open_delinquency:
                return Basis.OPEN_DELINQUENCY, None, None
            raise Forbidden(
                "collection inquiries are only allowed while the member has an open "
                "delinquency on the borrower",
                code="no_open_delinquency",
                errors=[FieldError("purpose", "open_delinquency_required", "no open record")],
            )
        raise Forbidden(  # credit_application without consent is refused by parse_request
            "a credit application needs the borrower's consent",
            code="consent_required",
            errors=[FieldError("consent", "required_for_credit_application", "is required")],
        )

    def _consent(
        self,
        session: Session,
        caller: Institution,
        claim: ConsentClaim,
        index: bytes,
        now: dt.datetime,
    ) -> Any:
        if claim.kind is ConsentKind.CONSENT_CODE:
            assert claim.code is not None
            return consents.redeem_code(
                session,
                self._material,
                code=claim.code,
                institution_id=caller.id,
                borrower_index=index,
                now=now,
            )
        assert claim.reference and claim.form_sha256 and claim.signed_on
        return consents.attest_written(
            session,
            self._policy,
            institution_id=caller.id,
            borrower_index=index,
            reference=claim.reference,
            form_sha256=claim.form_sha256,
            signed_on=claim.signed_on,
            now=now,
        )

    # --- the answer --------------------------------------------------------------------

    def _history(
        self,
        session: Session,
        caller: Institution,
        request: InquiryRequest,
        index: bytes,
        facts: _Facts,
        basis: Basis,
        ref: str,
        now: dt.datetime,
    ) -> dict[str, Any]:
        records, disputed = facts.records, facts.disputed
        file_statement: str | None = None
        record_statements: dict[int, str] = {}
        if facts.any_statement:
            file_statement, record_statements = statements.statements_for_inquiry(
                session, self._material, index, [r.id for r in records]
            )
        shown = []
        name: str | None = None
        for record in records:
            fields = record_fields(self._vault, record)
            name = fields.pop("name")
            fields["under_dispute"] = record.id in disputed
            fields["statement"] = record_statements.get(record.id)
            viewer = (
                masking.Viewer.REPORTING_MEMBER
                if record.institution_id == caller.id
                else masking.Viewer.OTHER_MEMBER
            )
            shown.append(masking.present(viewer, fields))
        subject = masking.present(
            masking.Viewer.OTHER_MEMBER,
            {"national_id": request.national_id, "name": name, "statement": file_statement},
        )
        return {
            "version": 1,
            "inquiry_id": ref,
            "institution": caller.code,
            "purpose": request.purpose.value,
            "basis": basis.value,
            "generated_at": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "subject": subject,
            "summary": _summary(records, disputed, facts.recent_30d, facts.recent_90d),
            "records": shown,
        }

    # --- the log -----------------------------------------------------------------------

    def _log(
        self,
        session: Session,
        *,
        ref: str,
        caller: Institution,
        index: bytes | None,
        purpose: str,
        basis: Basis,
        consent_id: int | None,
        consent_reference: str | None,
        outcome: str,
        refusal: str | None,
        raw: bytes,
        evidence: Mapping[str, Any],
        now: dt.datetime,
    ) -> None:
        """Insert the inquiry's log row and its data key (Core: nothing reads it as an object)."""
        key_values, key = self._vault.new_key_values(now)
        record = json.dumps(
            {**evidence, "body": base64.b64encode(raw).decode()}, separators=(",", ":")
        ).encode()
        connection = session.connection()
        connection.execute(
            _INSERT_INQUIRY,
            {
                "ref": ref,
                "institution_id": caller.id,
                "borrower_index": index,
                "purpose": purpose,
                "consent_kind": basis.value,
                "consent_reference": consent_reference,
                "consent_id": consent_id,
                "outcome": outcome,
                "refusal_code": refusal,
                "data_key_id": connection.execute(_INSERT_KEY, key_values).scalar_one(),
                "request_ct": self._vault.seal(key, "inquiries", "request", ref, record),
                "created_at": now,
            },
        )

    def evidence_of(self, inquiry: Inquiry) -> dict[str, Any]:
        """The signed request kept with an inquiry (for audits and disputes about an inquiry)."""
        if inquiry.data_key is None or inquiry.request_ct is None:
            return {}
        key = self._vault.open_key(inquiry.data_key)
        plain = self._vault.unseal(key, "inquiries", "request", inquiry.ref, inquiry.request_ct)
        loaded: dict[str, Any] = json.loads(plain)
        return loaded

    # --- retention (the sweeper) -------------------------------------------------------

    def expire(self, sessions: sessionmaker[Session], now: dt.datetime, *, batch: int = 500) -> int:
        """Delete inquiries past the retention period with their keys; old quota rows too."""
        horizon = now - dt.timedelta(days=self._policy.inquiry_retention_days)
        removed = 0
        while True:
            with sessions() as session, session.begin():
                rows = list(
                    session.execute(
                        select(Inquiry.id, Inquiry.data_key_id)
                        .where(Inquiry.created_at < horizon)
                        .limit(batch)
                        .with_for_update(skip_locked=True)
                    )
                )
                ids = [r.id for r in rows]
                keys = [r.data_key_id for r in rows if r.data_key_id is not None]
                if ids:
                    session.execute(delete(Inquiry).where(Inquiry.id.in_(ids)))
                    session.execute(delete(DataKey).where(DataKey.id.in_(keys)))
                removed += len(ids)
            if len(rows) < batch:
                break
        with sessions() as session, session.begin():
            session.execute(
                delete(QuotaUsage).where(QuotaUsage.day < now.date() - dt.timedelta(days=2))
            )
        return removed


def _summary(
    records: list[Delinquency], disputed: set[int], recent_30d: int, recent_90d: int
) -> dict[str, Any]:
    """The statement's summary; ``recent_*``: answered credit applications before this one."""
    totals: dict[str, Decimal] = defaultdict(lambda: Decimal("0.00"))
    for record in records:
        totals[record.currency] += (
            record.overdue_principal + record.overdue_interest + record.penalty
        )
    open_records = [r for r in records if r.status == "open"]
    max_dpd = max((r.days_past_due for r in records), default=0)
    lost = any(r.contact_status == "lost_contact" for r in records)
    legal = any(r.collection_stage == "legal_action" for r in records)
    institutions = len({r.institution_id for r in open_records})
    return {
        "worst_classification": worst([Tier(r.classification) for r in records]).value,
        "category": _category(len(records), institutions, max_dpd, lost, legal),
        "records": len(records),
        "institutions_with_open_delinquencies": institutions,
        "total_overdue": {cur: str(totals[cur]) for cur in sorted(totals)},
        "max_days_past_due": max_dpd,
        "lost_contact": lost,
        "legal_action": legal,
        "disputes_open": len(disputed),
        "credit_application_inquiries_30d": recent_30d,
        "credit_application_inquiries_90d": recent_90d,
    }


def _category(records: int, institutions: int, max_dpd: int, lost: bool, legal: bool) -> str:
    """A plain borrower classification from the facts held (DOMAIN.md fact 7 and 8).

    ``severe``: over 90 days past due, lost contact or legal action (where banks block a
    customer); ``multiple``: open delinquencies at two or more members; ``delinquent``: any
    record; ``clear``: none.
    """
    if records == 0:
        return "clear"
    if max_dpd > 90 or lost or legal:
        return "severe"
    if institutions >= 2:
        return "multiple"
    return "delinquent"


def _purpose_hint(raw: bytes) -> str:
    """The declared purpose of a refused attempt, only if it is one of ours (never free text)."""
    try:
        document = strictjson.loads_strict(raw)
    except StrictJSONError:
        return "invalid"
    value = document.get("purpose") if isinstance(document, dict) else None
    # NOTE: the purpose may be any JSON value here (an object is unhashable): compare strings only.
    return value if isinstance(value, str) and value in set(Purpose) else "invalid"
