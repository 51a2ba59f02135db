"""The portal's words in Simplified Chinese (the default: the registry serves Chinese borrowers)
and English, chosen by a cookie the language links set, else by ``Accept-Language``.

Catalogs are plain dictionaries with the same keys in both languages (a test checks it);
``label`` turns a stored code (``special_mention``, ``collection_agency``) into plain words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from werkzeug.datastructures import LanguageAccept

DEFAULT = "zh-CN"
LANGUAGES = ("zh-CN", "en")
COOKIE = "portal_lang"

ZH: dict[str, str] = {
    "site.name": "共享逾期登记 · 个人查询",
    "site.footer": "本页仅显示您本人的信息。离开公共电脑前请退出登录。",
    "language.zh-CN": "中文",
    "language.en": "English",
    "nav.language": "语言",
    "nav.sections": "栏目",
    "nav.records": "我的记录",
    "nav.inquiries": "查询记录",
    "nav.disputes": "异议",
    "nav.consents": "授权",
    "nav.statements": "本人声明",
    "nav.certificates": "清除证明",
    "nav.file": "下载我的档案（登记处签名的 JSON）",
    "nav.signout": "退出",
    "signin.title": "登录",
    "signin.intro": "输入您的居民身份证号码，我们会向登记在案的手机号发送一次性验证码。",
    "signin.national_id": "居民身份证号码",
    "signin.send": "发送验证码",
    "signin.no_phone": "没有登记手机号？请携带身份证到登记处柜台办理身份核验，领取登录码。",
    "code.title": "输入验证码",
    "code.intro": "如果该身份证号码在登记处有手机号，验证码已发送，10 分钟内有效。"
    "柜台发放的登录码也可在此使用。",
    "code.code": "验证码",
    "code.verify": "登录",
    "code.again": "重新获取验证码",
    "error.rate_limited": "尝试次数过多，请在 {seconds} 秒后再试。",
    "error.national_id": "身份证号码格式不正确（18 位，最后一位为校验码）。",
    "error.code": "验证码错误、已过期或已失效。连续 5 次错误后验证码作废，请重新获取。",
    "records.id": "身份证号码：",
    "records.none": "登记处没有关于您的逾期记录。",
    "records.summary": "自 {since} 起逾期 {days} 天，当前逾期总额 {total} {currency}。",
    "records.suppressed": "报送机构未按期答复您的异议：此记录已暂停向查询机构展示。",
    "records.under_dispute": "异议处理中：查询机构会看到“异议中”标注。",
    "records.dispute_this": "对这条记录提出异议",
    "field.account_ref": "账户",
    "field.name": "姓名",
    "field.phone": "手机",
    "field.address": "地址",
    "field.overdue_principal": "逾期本金",
    "field.overdue_interest": "逾期利息",
    "field.penalty": "违约金",
    "field.total_overdue": "逾期总额",
    "field.days_past_due": "逾期天数",
    "field.first_delinquency_date": "首次逾期日期",
    "field.last_reported_on": "最近报送日期",
    "field.classification": "分类",
    "field.collection_stage": "催收阶段",
    "field.contact_status": "联系状态",
    "field.status": "状态",
    "field.statement": "本人声明",
    "inquiries.intro": "以下机构查询过您的档案（日期、机构、查询原因和授权方式）。",
    "inquiries.none": "还没有机构查询过您的档案。",
    "inquiries.date": "日期",
    "inquiries.institution": "机构",
    "inquiries.purpose": "查询原因",
    "inquiries.consent": "授权方式",
    "disputes.new": "提出异议",
    "disputes.record": "记录",
    "disputes.reason": "原因",
    "disputes.text": "说明",
    "disputes.file": "提交异议",
    "disputes.mine": "我的异议",
    "disputes.none": "您还没有提出过异议。",
    "disputes.filed_at": "提出时间",
    "disputes.due_at": "答复期限",
    "disputes.answer": "机构答复",
    "consents.intro": "申请贷款或信用卡时，您可以为某一家机构生成授权码，"
    "允许其在有效期内查询您的档案。",
    "consents.issued": "已为 {institution} 生成授权码：",
    "consents.once": "授权码只显示这一次，请现在交给该机构的工作人员。",
    "consents.new": "生成授权码",
    "consents.institution": "授权机构",
    "consents.days": "有效天数（1 至 {max} 天）",
    "consents.issue": "生成授权码",
    "consents.mine": "我的授权",
    "consents.none": "您还没有授权任何机构。",
    "consents.issued_at": "生成时间",
    "consents.expires_at": "到期时间",
    "consents.revoked_at": "撤销时间",
    "consents.used_by": "使用记录",
    "consents.unused": "尚未使用",
    "consents.revoke": "撤销授权",
    "statements.intro": "您可以为整个档案或某条记录附上一段不超过 {max} 字的本人声明，"
    "每个查询机构都会看到它。",
    "statements.target": "声明对象",
    "statements.whole_file": "整个档案",
    "statements.text": "声明内容",
    "statements.save": "保存声明",
    "statements.none": "您还没有本人声明。",
    "statements.remove": "删除声明",
    "certificates.intro": "还清欠款后记录会被清除，登记处为您保留签名的清除证明。",
    "certificates.none": "暂无清除证明。",
    "certificates.institution": "机构",
    "certificates.reason": "清除原因",
    "certificates.cleared_at": "清除时间",
    "certificates.id": "证明编号",
    "certificates.file": "档案中包含全部证明，可用登记处公钥（/v1/registry-keys）验证签名。",
    "problem.title": "无法完成操作",
    "problem.csrf": "表单已过期或来源不明，请返回后重新提交。",
    "problem.signed_out": "您已退出或登录已超时，请重新登录。",
    "problem.back": "返回首页",
}

EN: dict[str, str] = {
    "site.name": "Shared Delinquency Registry · My file",
    "site.footer": "This page shows only your own data. Sign out before leaving a shared computer.",
    "language.zh-CN": "中文",
    "language.en": "English",
    "nav.language": "Language",
    "nav.sections": "Sections",
    "nav.records": "My records",
    "nav.inquiries": "Who looked",
    "nav.disputes": "Disputes",
    "nav.consents": "Consents",
    "nav.statements": "My statement",
    "nav.certificates": "Clearance certificates",
    "nav.file": "Download my file (JSON signed by the registry)",
    "nav.signout": "Sign out",
    "signin.title": "Sign in",
    "signin.intro": "Enter your resident ID number; we text a one-time code to the phone on file.",
    "signin.national_id": "Resident ID number",
    "signin.send": "Send me a code",
    "signin.no_phone": "No phone on file? Bring your ID card to the registry's counter for an "
    "identity check and an enrolment code.",
    "code.title": "Enter your code",
    "code.intro": "If this ID has a phone on file, a code was sent to it; it is valid for 10 "
    "minutes. An enrolment code from the counter works here too.",
    "code.code": "Code",
    "code.verify": "Sign in",
    "code.again": "Get a new code",
    "error.rate_limited": "Too many attempts; try again in {seconds} seconds.",
    "error.national_id": "That is not a valid resident ID number (18 characters, the last one "
    "a check character).",
    "error.code": "The code is wrong, expired or used up. After 5 wrong tries a code is dead; "
    "ask for a new one.",
    "records.id": "ID number:",
    "records.none": "The registry holds no overdue record about you.",
    "records.summary": "Overdue for {days} days since {since}; {total} {currency} overdue in all.",
    "records.suppressed": "The member did not answer your dispute in time: inquirers no longer "
    "see this record.",
    "records.under_dispute": "Under dispute: inquirers see it marked as disputed.",
    "records.dispute_this": "Dispute this record",
    "field.account_ref": "Account",
    "field.name": "Name",
    "field.phone": "Phone",
    "field.address": "Address",
    "field.overdue_principal": "Overdue principal",
    "field.overdue_interest": "Overdue interest",
    "field.penalty": "Late penalty",
    "field.total_overdue": "Total overdue",
    "field.days_past_due": "Days past due",
    "field.first_delinquency_date": "First overdue on",
    "field.last_reported_on": "Last reported on",
    "field.classification": "Classification",
    "field.collection_stage": "Collection stage",
    "field.contact_status": "Contact",
    "field.status": "Status",
    "field.statement": "My statement",
    "inquiries.intro": "These institutions looked at your file: date, institution, reason and "
    "the consent they relied on.",
    "inquiries.none": "No institution has looked at your file.",
    "inquiries.date": "Date",
    "inquiries.institution": "Institution",
    "inquiries.purpose": "Reason",
    "inquiries.consent": "Consent",
    "disputes.new": "Dispute a record",
    "disputes.record": "Record",
    "disputes.reason": "Reason",
    "disputes.text": "Explanation",
    "disputes.file": "File the dispute",
    "disputes.mine": "My disputes",
    "disputes.none": "You have not disputed any record.",
    "disputes.filed_at": "Filed",
    "disputes.due_at": "Answer due by",
    "disputes.answer": "Member's answer",
    "consents.intro": "When you apply for a loan or a card, give one institution a consent code "
    "that lets it look at your file until the code expires.",
    "consents.issued": "Consent code for {institution}:",
    "consents.once": "The code is shown only this once: give it to the loan officer now.",
    "consents.new": "New consent code",
    "consents.institution": "Institution",
    "consents.days": "Valid for (1 to {max} days)",
    "consents.issue": "Issue the code",
    "consents.mine": "My consents",
    "consents.none": "You have not given any consent.",
    "consents.issued_at": "Issued",
    "consents.expires_at": "Expires",
    "consents.revoked_at": "Revoked",
    "consents.used_by": "Used by",
    "consents.unused": "not used yet",
    "consents.revoke": "Revoke",
    "statements.intro": "Attach a statement of up to {max} characters to your whole file or to "
    "one record; every inquirer sees it beside it.",
    "statements.target": "Attach to",
    "statements.whole_file": "My whole file",
    "statements.text": "Statement",
    "statements.save": "Save the statement",
    "statements.none": "You have no statement.",
    "statements.remove": "Remove",
    "certificates.intro": "When a debt is settled its record is cleared; the registry keeps a "
    "signed clearance certificate for you.",
    "certificates.none": "No clearance certificates.",
    "certificates.institution": "Institution",
    "certificates.reason": "Why cleared",
    "certificates.cleared_at": "Cleared at",
    "certificates.id": "Certificate",
    "certificates.file": "your file includes every certificate; check its signature with the "
    "registry's public key (/v1/registry-keys).",
    "problem.title": "That did not work",
    "problem.csrf": "The form expired or did not come from this site; go back and send it again.",
    "problem.signed_out": "You are signed out (or were idle too long); sign in again.",
    "problem.back": "Back to the start",
}

LABELS: dict[str, dict[str, dict[str, str]]] = {
    "product": {
        "credit_card": {"zh-CN": "信用卡", "en": "credit card"},
        "consumer_loan": {"zh-CN": "消费贷款", "en": "consumer loan"},
        "online_loan": {"zh-CN": "网络贷款", "en": "online loan"},
        "mortgage": {"zh-CN": "住房贷款", "en": "mortgage"},
        "business_loan": {"zh-CN": "经营贷款", "en": "business loan"},
    },
    "classification": {
        "normal": {"zh-CN": "正常", "en": "normal"},
        "special_mention": {"zh-CN": "关注", "en": "special mention"},
        "substandard": {"zh-CN": "次级", "en": "substandard"},
        "doubtful": {"zh-CN": "可疑", "en": "doubtful"},
        "loss": {"zh-CN": "损失", "en": "loss"},
    },
    "classification_help": {
        "normal": {"zh-CN": "按时还款。", "en": "Paying as agreed."},
        "special_mention": {
            "zh-CN": "已逾期，但尚未严重到影响还款能力的程度。",
            "en": "Overdue, but not yet so long that repayment is in doubt.",
        },
        "substandard": {
            "zh-CN": "逾期较久，仅靠正常收入可能无法足额还款。",
            "en": "Overdue long enough that normal income may not repay it in full.",
        },
        "doubtful": {
            "zh-CN": "逾期很久，即使处置担保也可能造成损失。",
            "en": "Overdue so long that a loss is likely even after any security is used.",
        },
        "loss": {
            "zh-CN": "逾期时间最长的一级，机构预计大部分无法收回。",
            "en": "The longest-overdue tier: the lender expects to recover little of it.",
        },
    },
    "stage": {
        "reminder": {"zh-CN": "提醒", "en": "reminders"},
        "repayment_plan": {"zh-CN": "协商还款", "en": "repayment plan"},
        "collection_agency": {"zh-CN": "委外催收", "en": "collection agency"},
        "legal_action": {"zh-CN": "法律诉讼", "en": "legal action"},
    },
    "stage_help": {
        "reminder": {
            "zh-CN": "机构通过短信、电话、邮件或信函提醒您还款。",
            "en": "The lender reminds you by text, call, e-mail or letter.",
        },
        "repayment_plan": {
            "zh-CN": "已商定分期或延期还款计划。",
            "en": "Instalments or an extension have been agreed.",
        },
        "collection_agency": {
            "zh-CN": "债务已交给催收机构；催收不得骚扰或频繁致电。",
            "en": "The debt was passed to a collection agency, which may not harass you or call "
            "you often.",
        },
        "legal_action": {
            "zh-CN": "机构已提起诉讼或申请财产保全。",
            "en": "The lender went to court (a lawsuit or asset preservation).",
        },
    },
    "contact": {
        "reachable": {"zh-CN": "可联系", "en": "reachable"},
        "unresponsive": {"zh-CN": "未接听", "en": "not answering"},
        "lost_contact": {"zh-CN": "失联", "en": "lost contact"},
    },
    "record_status": {
        "open": {"zh-CN": "逾期中", "en": "overdue"},
        "settled": {"zh-CN": "已结清", "en": "settled"},
    },
    "purpose": {
        "credit_application": {"zh-CN": "贷款或信用卡审批", "en": "credit application"},
        "account_review": {"zh-CN": "贷后管理", "en": "account review"},
        "collection": {"zh-CN": "催收", "en": "collection"},
    },
    "consent_kind": {
        "consent_code": {"zh-CN": "授权码", "en": "consent code"},
        "written_authorization": {"zh-CN": "书面授权", "en": "written authorization"},
        "live_consent": {"zh-CN": "有效授权", "en": "a live consent"},
        "own_record": {"zh-CN": "本机构的记录", "en": "its own record"},
        "open_delinquency": {"zh-CN": "未结清的逾期", "en": "an open delinquency"},
        "none": {"zh-CN": "无", "en": "none"},
    },
    "consent_state": {
        "live": {"zh-CN": "有效", "en": "live"},
        "expired": {"zh-CN": "已过期", "en": "expired"},
        "revoked": {"zh-CN": "已撤销", "en": "revoked"},
    },
    "reason": {
        "not_mine": {"zh-CN": "不是我的账户", "en": "not my account"},
        "identity_theft": {"zh-CN": "身份被冒用", "en": "identity theft"},
        "already_paid": {"zh-CN": "已经还清", "en": "already paid"},
        "wrong_amount": {"zh-CN": "金额有误", "en": "wrong amount"},
        "wrong_dates": {"zh-CN": "日期有误", "en": "wrong dates"},
        "wrong_status": {"zh-CN": "状态有误", "en": "wrong status"},
        "other": {"zh-CN": "其他（请说明）", "en": "other (please explain)"},
    },
    "dispute_status": {
        "open": {"zh-CN": "处理中", "en": "awaiting the member's answer"},
        "answered": {"zh-CN": "已答复", "en": "answered"},
        "expired": {"zh-CN": "逾期未答复", "en": "not answered in time"},
    },
    "answer": {
        "confirm": {"zh-CN": "机构核实后维持原记录", "en": "the member verified and kept it"},
        "correct": {"zh-CN": "机构已更正", "en": "the member corrected it"},
        "withdraw": {"zh-CN": "机构已撤回记录", "en": "the member withdrew it"},
    },
    "clear_reason": {
        "settled": {"zh-CN": "已还清", "en": "settled"},
        "reported_in_error": {"zh-CN": "误报撤回", "en": "reported in error"},
        "fraud": {"zh-CN": "欺诈撤回", "en": "fraud"},
        "max_age": {"zh-CN": "超过保存期限", "en": "past the maximum age"},
    },
}

CATALOGS: Mapping[str, Mapping[str, str]] = {"zh-CN": ZH, "en": EN}


def negotiate(cookie: str | None, accept: LanguageAccept) -> str:
    """The cookie's language if valid, else the best ``Accept-Language`` match, else zh-CN."""
    if cookie in LANGUAGES:
        assert cookie is not None
        return cookie
    best = accept.best_match(["zh-CN", "zh", "en"], default=DEFAULT)
    return "zh-CN" if best.startswith("zh") else best


def text(lang: str, key: str, **params: Any) -> str:
    """The text for ``key``; a missing key is a bug (KeyError), caught by the tests."""
    template = CATALOGS[lang][key]
    return template.format(**params) if params else template


def label(lang: str, kind: str, value: str | None) -> str:
    """Plain words for a stored code; an unknown code is shown as it is, never hidden."""
    if value is None:
        return "—"
    return LABELS.get(kind, {}).get(value, {}).get(lang, value)
