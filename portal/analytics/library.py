"""The similar-case library (类案检索): closed cases, anonymised, for mediators to learn from.

:func:`sync_library` gives every closed case (and every case withdrawn after it was accepted)
one :class:`LibraryEntry`: its facts and the other obligations of its agreement with the
personal data taken out (:func:`anonymise`), amounts rounded (:func:`round_fen`), the closing
date kept to the month, the outcome, the agreement's terms, and a MinHash fingerprint of the
anonymised facts. :class:`LibraryLoop` runs it in the background. :func:`search_library` finds
entries by words (substring search, the same on both databases) and filters;
:func:`similar_entries` ranks the entries most like a case's facts.

What anonymisation removes, in this order:

1. what the case itself knows about people: the claimant's name, identity number and phone,
   the agent's name and phone (decrypted through the DataVault), and the names, phones and
   e-mail addresses of the users involved: the filer, the mediator, everyone who acted on the
   case's timeline, the respondent firm's representatives, and the names typed when signing.
   Names become their role (申请人, 代理人, 调解员, 被申请人代表, 工作人员), in any spacing;
   numbers become a label (【手机号】, 【身份证号】) whatever their separators;
2. patterns anywhere in the text: e-mail addresses, WeChat/QQ/Alipay account names, licence
   plates, every run of seven digits or more (with spaces, dashes, +86 or an area code in
   brackets): mobile and landline numbers, resident identity numbers (18 and 15 digits),
   bank cards and accounts, order numbers; house numbers of addresses; and the usual ways of
   naming a person by surname (张先生, 李女士, 王某某, 赵总, 老王, 小李, Z先生, 业务员李明, 姓名：
   王伟 → 某先生, 某女士, 某某, 某总, 老某, 小某, 某先生, 业务员某某, 姓名：某某);
3. precision: days of dates (to the month), and amounts of money written with a currency
   sign or unit, in digits or Chinese numerals, rounded to two significant figures.

The respondent firm's name stays: a firm is not a person.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
from sqlalchemy import Select, and_, column, func, or_, select, text
from sqlalchemy import table as sa_table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.accounts.models import User
from portal.agreements.models import (
    Agreement,
    AgreementSignature,
    AgreementStatus,
    AgreementVersion,
)
from portal.analytics.library_models import LibraryEntry, Outcome
from portal.analytics.shingles import fingerprint, normalise, to_bytes
from portal.background import BackgroundLoop
from portal.cases.lifecycle import Status
from portal.cases.models import Case, CaseEvent
from portal.cases.service import TZ
from portal.crypto import DataVault
from portal.db import session_scope, utcnow
from portal.errors import NotFound
from portal.i18n import Msg, _l
from portal.policy import Role
from portal.search import bigram_set, fts_phrase
from portal.workdays.service import WorkCalendar, load_calendar

logger = logging.getLogger("jiefen.analytics.library")

OUTCOME_LABELS: dict[str, Msg] = {
    Outcome.FULFILLED.value: _l("Settled, and the agreement was carried out"),
    Outcome.FAILED.value: _l("Mediation failed"),
    Outcome.TRANSFERRED.value: _l("Transferred to litigation"),
    Outcome.WITHDRAWN.value: _l("Withdrawn"),
}

# -- rounding -------------------------------------------------------------------------------


def round_yuan(yuan: Decimal) -> Decimal:
    """To two significant figures, half up: 12,345.67 → 12,000; 1,250 → 1,300; 85 → 85."""
    if yuan <= 0:
        return Decimal(0)
    whole = int(yuan.to_integral_value(rounding="ROUND_HALF_UP"))
    if whole < 100:
        return Decimal(whole)
    step = 10 ** (len(str(whole)) - 2)
    return Decimal((whole + step // 2) // step * step)


def round_fen(fen: int | None) -> int | None:
    """An amount in fen, rounded to two significant figures of its yuan (still in fen)."""
    if fen is None:
        return None
    return int(round_yuan(Decimal(fen) / 100)) * 100


def approx_yuan(fen: int | None) -> str:
    """A rounded amount as shown: ¥12,000 (no fen: they would claim a precision it lacks)."""
    if fen is None:
        return ""
    return f"¥{fen // 100:,}"


# -- anonymisation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """A piece of personal data the case knows, and what replaces it."""

    kind: str  # "name", "phone", "id", "email"
    value: str
    placeholder: str


# Full-width digits and Latin letters (and + - . @ _) are written as their ASCII forms first,
# so that the patterns below see "１３９" as "139". Chinese punctuation stays as it is.
_WIDTH = {
    **{c: c - 0xFEE0 for c in range(0xFF10, 0xFF1A)},
    **{c: c - 0xFEE0 for c in range(0xFF21, 0xFF3B)},
    **{c: c - 0xFEE0 for c in range(0xFF41, 0xFF5B)},
    **{ord(c): ord(c) - 0xFEE0 for c in "＋－．＠＿"},
    0x3000: 0x20,
}

HAN = "\u4e00-\u9fff"
# Surnames, in three lists by how safely each character can be read as a name before a title,
# a given name or after a role word (some are also everyday words: 和, 时, 任何, 方面, 余额…).
COMPOUND_SURNAMES = "欧阳|司马|诸葛|上官|皇甫|尉迟|公孙|慕容|令狐|司徒|夏侯|长孙|宇文|南宫"
TOP_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖萧田董袁潘蒋蔡余杜叶"
    "程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫阎段雷侯龙史陶"
    "黎贺顾毛郝龚邵万钱严覃武戴莫孔汤"
)
MORE_SURNAMES = (
    "常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯"
    "纪梅童凌毕季裴霍涂苗谷盛曲翁冉骆蓝游辛靳管柴蒙鲍华喻祁蒲房滕屈饶牟艾尤穆农卓古吉缪简项"
    "连芦麦褚娄窦戚岑景宫卜晏席卫米柏宗瞿桂佟臧闵苟邬卞姬仇栾隋刁巫寇桑郎甄丛仲虞敖巩佘池查"
    "麻苑迟邝于"
)
# Nicknames: 老王, 小李 (not 老顾客, 小程序, 小额, 老高兴, 小孙子, 老许多年…).
FAMILIAR_SURNAMES = (
    "王李张刘陈杨赵吴周徐马朱郭何林罗郑梁谢宋唐韩冯邓曹彭肖田董袁潘蒋蔡杜魏吕丁沈姚卢姜崔谭"
    "汪廖贾夏邹孟秦邱尹薛闫雷侯史陶黎贺郝龚邵严戴武"
)


def _surnames(singles: str, exclude: str = "") -> str:
    kept = "".join(c for c in singles if c not in exclude)
    return f"(?:{COMPOUND_SURNAMES}|[{kept}])"


# Characters that do not continue a given name after a surname: particles, verbs of speech
# and the like ("业务员李明说…" is 李明, not 李明说).
_NOT_GIVEN = (
    "说向给对跟让称讲问找告推介打电联答回拒同私诱骗只才却便再先后经受亲表承诺加发的了在是和与"
    "及或也都还又就要会能可不没被把将从为于当等已曾很太更最这那其此每本该用以到过去来上下中里"
    "内外前时们号年月日元级端牌领课型类某"
)
_GIVEN = f"(?:(?![{_NOT_GIVEN}])[{HAN}])"
_TITLES = (
    "先生|女士|小姐|太太|夫人|阿姨|叔叔|大爷|大妈|大姐|大哥|师傅|老师|经理|总监|主管|主任|律师|"
    "医生|专员|同学|老板|科长|处长|部长|行长|局长|院长"
)
# 张晓明先生, 王伟经理 → 某先生, 某经理; then 张先生, 于女士 → 某先生, 某女士
_NAME_TITLED = re.compile(f"{_surnames(TOP_SURNAMES)}{_GIVEN}{{1,2}}({_TITLES})")
_TITLED = re.compile(f"{_surnames(TOP_SURNAMES + MORE_SURNAMES)}({_TITLES})")
# 王某, 王某某 → 某某 (于某日 is a date)
_SOMEONE = re.compile(f"{_surnames(TOP_SURNAMES + MORE_SURNAMES, '于')}某某?")
# 赵总, 王姐, 刘哥 → 某总, 某姐, 某哥 (not 公司总部, 订单总额, 交易总额, 和总经理, 师姐…)
_SHORT_TITLED = re.compile(
    f"{_surnames(TOP_SURNAMES, '金钱万方石白余任程段范')}"
    "(总(?![额计价部经共数和量结监裁行公体之是成收利费金])|姐|哥)"
)
_FAMILIAR = re.compile(f"([老小])[{FAMILIAR_SURNAMES}]")
# 业务员李明, 客户经理张晓东, 姓名：王伟, 我叫刘洋 → 业务员某某… (not 销售范围, 员工任务,
# 客服付款, 投资顾问费…)
_ROLES = (
    "客户经理|理财经理|业务经理|投资顾问|业务员|销售员|推销员|工作人员|介绍人|联系人|分析师|"
    "法定代表人|负责人|申请人|代理人|当事人|律师|"
    "被保险人|投保人|受益人|借款人|出借人|担保人|委托人|收款人|付款人|持卡人|开户名|户名|"
    "姓名|名字|我叫|名叫|叫做|经理|客服|专员|顾问|讲师|助理|老师|销售|员工|丈夫|妻子|老公|"
    "老婆|儿子|女儿|父亲|母亲|朋友|同事"
)
_ROLE_NAME = re.compile(
    f"({_ROLES})([:：]?[ ]?)"
    f"{_surnames(TOP_SURNAMES, '于金高万钱费向全和任方白段余程范黄熊毛莫严陆付')}{_GIVEN}{{1,2}}"
)
# Z先生, ZS女士 → 某先生; Mr Zhang → Mr X
_INITIALS = re.compile(r"(?<![A-Za-z])[A-Z]{1,2}(?=先生|女士|小姐|某)")
_ENGLISH_TITLED = re.compile(r"\b(Mr|Mrs|Ms|Miss|Dr)\.?\s+[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?")

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_SOCIAL = re.compile(
    r"(微信号|微信|WeChat|wechat|QQ号|QQ|qq号|qq|支付宝账号|支付宝)"
    r"(\s*(?:号码|账号|ID|id)?\s*[:：为是]?\s*)([A-Za-z0-9_\-]{5,30})"
)
_PLATE = re.compile(
    "[京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼]"
    r"[A-HJ-NP-Z][·•\s]?[A-HJ-NP-Z0-9]{4,5}[A-HJ-NP-Z0-9挂学警]?(?![A-Za-z0-9])"
)
_DATE_FULL = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*\d{1,2}\s*[日号]")
_DATE_ISO = re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")
_DATE_MONTH_DAY = re.compile(r"(?<!\d)(\d{1,2})\s*月\s*\d{1,2}\s*[日号]")
_AMOUNT = re.compile(
    r"(?P<prefix>(?:人民币|RMB|CNY|¥|￥)\s*)?(?<![\d.,])(?P<number>\d{1,3}(?:,\d{3})+|\d+)"
    r"(?P<decimal>\.\d+)?\s*(?:余|多)?"
    f"(?P<unit>亿元|万元|千元|百元|元|块钱|(?:亿|万)(?![{HAN}]))?"
)
_CN_DIGITS = {
    **dict.fromkeys("零〇", 0),
    **dict.fromkeys("一壹", 1),
    **dict.fromkeys("二两贰", 2),
    **dict.fromkeys("三叁", 3),
    **dict.fromkeys("四肆", 4),
    **dict.fromkeys("五伍", 5),
    **dict.fromkeys("六陆", 6),
    **dict.fromkeys("七柒", 7),
    **dict.fromkeys("八捌", 8),
    **dict.fromkeys("九玖", 9),
}
_CN_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_CN_NUMERALS = "".join(_CN_DIGITS) + "".join(_CN_UNITS) + "万亿"
_CN_AMOUNT = re.compile(
    f"(?P<prefix>人民币\\s*)?(?P<number>[{_CN_NUMERALS}]{{2,}})(?:余|多)?(?P<unit>元|圆|块钱)"
    f"(?:[{''.join(_CN_DIGITS)}][角分])*整?"
)
# A run of seven digits or more: single spaces or dashes between digits, a +86 or an area code
# in brackets in front, an X at the end (identity numbers).
_DIGITS = re.compile(
    r"\+?(?:[(（]0\d{2,3}[)）][ \-]?)?(?<![0-9])\d(?:[ \-]?\d)*(?:[Xx](?![A-Za-z]))?(?![0-9])"
)
_HOUSE = r"(?:\d+|[一二三四五六七八九十]+)(?:[-－]\d+)?(?:号楼|号院|栋|幢|座|单元|楼|层|室|弄|号)"
_ADDRESS = re.compile(f"(?:{_HOUSE})+")
_ROAD = "路街道巷里村"
_ROOMS = ("室", "弄", "栋", "幢", "单元", "号楼", "号院")
PLACEHOLDERS = ("被申请人代表", "申请人", "代理人", "调解员", "工作人员", "当事人")
_REPEATED = re.compile("(" + "|".join(PLACEHOLDERS) + r")(?:[\s·、]*\1)+")


def _flexible(value: str, separators: str) -> str:
    """A pattern for ``value`` whatever the spacing (and ``separators``) between its characters."""
    chars = [c for c in value if not c.isspace() and c not in separators]
    return f"[\\s{re.escape(separators)}]*".join(re.escape(c) for c in chars)


def _known_patterns(known: Iterable[Known]) -> list[tuple[re.Pattern[str], str]]:
    found: list[tuple[int, re.Pattern[str], str]] = []
    for item in known:
        value = item.value.translate(_WIDTH).strip()
        if item.kind == "name":
            core = "".join(value.split()).replace("·", "").replace("•", "")
            if len(core) < 2:
                continue
            pattern = _flexible(value, "·•.")
            if core.isascii():
                pattern = f"(?<![A-Za-z]){pattern}(?![A-Za-z])"
            found.append((len(core), re.compile(pattern, re.IGNORECASE), item.placeholder))
        elif item.kind in ("phone", "id"):
            digits = re.sub(r"[^0-9Xx]", "", value)
            if len(digits) < 5:
                continue
            pattern = _flexible(digits, "-.·()（）")
            if item.kind == "phone":
                pattern = r"(?:\+?86[\s\-]*)?" + pattern
            found.append((len(digits), re.compile(pattern, re.IGNORECASE), item.placeholder))
        elif item.kind == "email" and "@" in value:
            found.append(
                (len(value), re.compile(re.escape(value), re.IGNORECASE), item.placeholder)
            )
    found.sort(key=lambda f: -f[0])  # longer first: 张三丰 before 张三
    return [(p, r) for _, p, r in found]


def _valid_day(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return 1900 <= year <= 2100


def _iso_date(match: re.Match[str]) -> str:
    year, month, day = (int(g) for g in match.groups())
    return f"{year}年{month}月" if _valid_day(year, month, day) else match.group(0)


def _yuan_text(amount: Decimal) -> str:
    text = format(amount.normalize(), "f")
    whole, _, cents = text.partition(".")
    return f"{int(whole):,}" + (f".{cents}" if cents else "")


_MULTIPLIER = {"亿": 10**8, "万": 10**4, "千": 1000, "百": 100}


def _about(match: re.Match[str]) -> str:
    """约 before a rounded amount, unless the text says "about" already."""
    before = match.string[max(0, match.start() - 2) : match.start()]
    return "" if before.endswith(("约", "近", "逾", "超", "余", "大概", "左右")) else "约"


def _round_amount(match: re.Match[str]) -> str:
    prefix = (match.group("prefix") or "").strip()
    unit = match.group("unit") or ""
    if not prefix and not unit:
        return match.group(0)
    try:
        number = Decimal(match.group("number").replace(",", "") + (match.group("decimal") or ""))
    except InvalidOperation:
        return match.group(0)
    scale = _MULTIPLIER.get(unit[:1], 1)
    rounded = round_yuan(number * scale)
    if rounded == number * scale:
        return match.group(0)
    if unit[:1] in ("亿", "万"):
        return f"{_about(match)}{prefix}{_yuan_text(rounded / scale)}{unit}"
    shown_unit = "" if not unit else ("块钱" if unit == "块钱" else "元")
    return f"{_about(match)}{prefix}{rounded:,}{shown_unit}"


def chinese_number(numerals: str) -> int | None:
    """一万二千三百四十五 → 12345 (also 壹万贰仟…); None when it is not a number."""
    total = section = number = 0
    for c in numerals:
        if c in _CN_DIGITS:
            number = _CN_DIGITS[c]
        elif c in _CN_UNITS:
            section += (number or 1) * _CN_UNITS[c]
            number = 0
        elif c == "万":
            total += (section + number) * 10**4
            section = number = 0
        elif c == "亿":
            total = (total + section + number) * 10**8
            section = number = 0
        else:
            return None
    return total + section + number


def _round_chinese_amount(match: re.Match[str]) -> str:
    value = chinese_number(match.group("number"))
    if value is None or value == 0:
        return match.group(0)
    rounded = round_yuan(Decimal(value))
    if rounded == value:
        return match.group(0)
    prefix = (match.group("prefix") or "").strip()
    return f"{_about(match)}{prefix}{int(rounded):,}元"


def _looks_like_id(digits: str) -> bool:
    """18 characters (17 digits and a digit or X) or 15 digits, with a birth date inside."""
    if len(digits) == 18 and digits[:17].isdigit():
        year, month, day = int(digits[6:10]), int(digits[10:12]), int(digits[12:14])
        return _valid_day(year, month, day)
    if len(digits) == 15 and digits.isdigit():
        return _valid_day(1900 + int(digits[6:8]), int(digits[8:10]), int(digits[10:12]))
    return False


def _digit_run(match: re.Match[str]) -> str:
    raw = match.group(0)
    digits = re.sub(r"[^0-9Xx]", "", raw).upper()
    count = sum(c.isdigit() for c in digits)
    if count < 7:
        return raw
    if len(digits) == 8 and digits.isdigit():
        year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:])
        if _valid_day(year, month, day):
            return f"{year}年{month}月"
        years = re.fullmatch(r"((?:19|20)\d\d)[ \-]((?:19|20)\d\d)", raw)
        if years:  # 2019-2023
            return raw
    if re.fullmatch(r"(?:86)?1[3-9]\d{9}", digits):
        return "【手机号】"
    if _looks_like_id(digits) or (digits.endswith("X") and len(digits) in (15, 18)):
        return "【身份证号】"
    if digits.startswith("0") and 10 <= len(digits) <= 12:
        return "【电话】"
    if 12 <= len(digits) <= 19:
        return "【账号】"
    if len(digits) <= 8:
        return "【电话】"
    return "【号码】"


def _address(match: re.Match[str]) -> str:
    raw = match.group(0)
    parts = re.findall(_HOUSE, raw)
    before = match.string[match.start() - 1] if match.start() else ""
    if len(parts) >= 2 or raw.endswith(_ROOMS) or any(p.endswith(_ROOMS) for p in parts):
        return "【门牌号】"
    if before and before in _ROAD and raw.endswith("号"):
        return "【门牌号】"
    return raw


# Known data is first swapped for characters of the Private Use Area, which no pattern below
# matches, so that 申请人 is not read as the surname 申 followed by a name.
_PRIVATE = re.compile("[\ue000-\uf8ff]")


def anonymise(value: str, known: Iterable[Known] = ()) -> str:
    """``value`` without the personal data described in the module's docstring."""
    if not value:
        return ""
    out = _PRIVATE.sub("", value.translate(_WIDTH))
    marks: dict[str, str] = {}
    for pattern, placeholder in _known_patterns(known):
        mark = marks.setdefault(placeholder, chr(0xE000 + len(marks)))
        out = pattern.sub(mark, out)
    out = EMAIL.sub("【邮箱】", out)
    out = _SOCIAL.sub(lambda m: m.group(1) + m.group(2) + "【账号】", out)
    out = _PLATE.sub("【车牌号】", out)
    out = _DATE_FULL.sub(r"\1年\2月", out)
    out = _DATE_ISO.sub(_iso_date, out)
    out = _DATE_MONTH_DAY.sub(r"\1月", out)
    out = _CN_AMOUNT.sub(_round_chinese_amount, out)
    out = _AMOUNT.sub(_round_amount, out)
    out = _DIGITS.sub(_digit_run, out)
    out = _ADDRESS.sub(_address, out)
    out = _ROLE_NAME.sub(lambda m: m.group(1) + m.group(2) + "某某", out)
    out = _NAME_TITLED.sub(lambda m: "某" + m.group(1), out)
    out = _TITLED.sub(lambda m: "某" + m.group(1), out)
    out = _SOMEONE.sub("某某", out)
    out = _SHORT_TITLED.sub(lambda m: "某" + m.group(1), out)
    out = _FAMILIAR.sub(lambda m: m.group(1) + "某", out)
    out = _INITIALS.sub("某", out)
    out = _ENGLISH_TITLED.sub(lambda m: m.group(1) + " X", out)
    for placeholder, mark in marks.items():
        out = out.replace(mark, placeholder)
    return _REPEATED.sub(r"\1", out)


def search_form(value: str) -> str:
    """Text as the search reads it (entries and queries alike): NFKC, lower case, single
    spaces."""
    return " ".join(unicodedata.normalize("NFKC", value).lower().split())


# -- what the case knows about people -------------------------------------------------------


PLACEHOLDER_BY_ROLE = {
    Role.MEDIATOR.value: "调解员",
    Role.COMMITTEE_ADMIN.value: "工作人员",
    Role.PLATFORM_ADMIN.value: "工作人员",
    Role.FIRM_REP.value: "被申请人代表",
    Role.CONSUMER.value: "当事人",
}


def _decrypt(vault: DataVault, blob: bytes | None, context: str) -> str:
    return vault.decrypt(blob, context) if blob else ""


def _user_items(vault: DataVault, user: User, placeholder: str) -> list[Known]:
    items = [Known("name", user.display_name, placeholder)]
    phone = _decrypt(vault, user.phone_enc, "users.phone")
    email = _decrypt(vault, user.email_enc, "users.email")
    if phone:
        items.append(Known("phone", phone, "【手机号】"))
    if email:
        items.append(Known("email", email, "【邮箱】"))
    return items


def _role_of(case: Case, user: User) -> str:
    """The placeholder for a user's name in a case's texts."""
    if user.id == case.filer_id:
        return "申请人" if case.filed_as == "self" else "代理人"
    if user.id == case.mediator_id:
        return "调解员"
    return PLACEHOLDER_BY_ROLE.get(user.role, "当事人")


async def known_people(
    db: AsyncSession, vault: DataVault, cases: Sequence[Case]
) -> dict[int, list[Known]]:
    """For each case, the personal data it knows of: claimant, agent, and the users involved."""
    ids = [c.id for c in cases]
    found: dict[int, list[Known]] = {c.id: [] for c in cases}
    if not ids:
        return found
    actors: dict[int, set[int]] = {c.id: set() for c in cases}
    for case_id, actor_id in await db.execute(
        select(CaseEvent.case_id, CaseEvent.actor_id)
        .where(CaseEvent.case_id.in_(ids), CaseEvent.actor_id.is_not(None))
        .distinct()
    ):
        if actor_id is not None:
            actors[case_id].add(actor_id)
    signed: dict[int, list[tuple[int, str, str]]] = {c.id: [] for c in cases}
    for case_id, user_id, side, typed in await db.execute(
        select(
            Agreement.case_id,
            AgreementSignature.user_id,
            AgreementSignature.side,
            AgreementSignature.typed_name,
        )
        .join(Agreement, Agreement.id == AgreementSignature.agreement_id)
        .where(Agreement.case_id.in_(ids))
    ):
        signed[case_id].append((user_id, side, typed))
        actors[case_id].add(user_id)
    firm_ids = {c.respondent_firm_id for c in cases if c.respondent_firm_id is not None}
    reps: dict[int, list[User]] = {}
    if firm_ids:
        for rep in await db.scalars(
            select(User).where(User.firm_id.in_(firm_ids), User.role == Role.FIRM_REP.value)
        ):
            reps.setdefault(rep.firm_id or 0, []).append(rep)
    user_ids = set().union(*actors.values()) | {c.filer_id for c in cases}
    user_ids |= {c.mediator_id for c in cases if c.mediator_id is not None}
    users = {u.id: u for u in await db.scalars(select(User).where(User.id.in_(user_ids)))}
    for case in cases:
        items = found[case.id]
        items += [
            Known("name", _decrypt(vault, case.claimant_name_enc, "cases.claimant_name"), "申请人"),
            Known("id", _decrypt(vault, case.claimant_id_enc, "cases.claimant_id"), "【身份证号】"),
            Known(
                "phone",
                _decrypt(vault, case.claimant_phone_enc, "cases.claimant_phone"),
                "【手机号】",
            ),
            Known("name", _decrypt(vault, case.agent_name_enc, "cases.agent_name"), "代理人"),
            Known(
                "phone", _decrypt(vault, case.agent_phone_enc, "cases.agent_phone"), "【手机号】"
            ),
        ]
        people = [users[i] for i in actors[case.id] | {case.filer_id} if i in users]
        if case.mediator_id in users:
            people.append(users[case.mediator_id])
        people += reps.get(case.respondent_firm_id or -1, [])
        for person in people:
            items += _user_items(vault, person, _role_of(case, person))
        for user_id, side, typed in signed[case.id]:
            signer = users.get(user_id)
            placeholder = _role_of(case, signer) if signer else "当事人"
            if side == "respondent":
                placeholder = "被申请人代表"
            items.append(Known("name", typed, placeholder))
    return found


# -- building entries -----------------------------------------------------------------------


def terms_summary(terms: Mapping[str, Any], known: Sequence[Known]) -> dict[str, Any]:
    """An effective agreement's terms (``Terms.to_json()``) for the library: amounts rounded,
    the number of payments (not their dates), other obligations anonymised."""
    payments = terms.get("payments") or []
    return {
        "refund_fen": round_fen(int(terms.get("refund_fen") or 0)) or 0,
        "compensation_fen": round_fen(int(terms.get("compensation_fen") or 0)) or 0,
        "fee_waiver_fen": round_fen(int(terms.get("fee_waiver_fen") or 0)) or 0,
        "interest_waiver_fen": round_fen(int(terms.get("interest_waiver_fen") or 0)) or 0,
        "instalments": len(payments),
        "apology": bool(terms.get("apology")),
        "withdraw_complaints": bool(terms.get("withdraw_complaints")),
        "other": [anonymise(str(line), known) for line in terms.get("other") or ()],
    }


def _local_date(moment: datetime) -> date:
    return moment.astimezone(TZ).date()


def _working_days(case: Case, calendar: WorkCalendar) -> int | None:
    start = case.accepted_at or case.submitted_at
    end = case.closed_at
    if start is None or end is None:
        return None
    days = calendar.working_days_between(_local_date(start), _local_date(end))
    return max(0, days - (case.paused_working_days or 0))


def outcome_of(case: Case, path: set[str], agreed: bool) -> Outcome:
    if case.status == Status.WITHDRAWN:
        return Outcome.WITHDRAWN
    if Status.TRANSFERRED.value in path:
        return Outcome.TRANSFERRED
    if Status.FULFILLED.value in path or agreed:
        return Outcome.FULFILLED
    return Outcome.FAILED


def build_entry(
    case: Case,
    known: Sequence[Known],
    path: set[str],
    terms: Mapping[str, Any] | None,
    calendar: WorkCalendar,
) -> dict[str, Any]:
    """The library row of ``case`` (a plain dict, for one multi-row INSERT)."""
    facts = anonymise(case.facts or "", known)
    summary = terms_summary(terms, known) if terms is not None else {}
    respondent = case.respondent_name or ""
    if case.respondent_firm_id is None:  # typed by the claimant: it might name a person
        respondent = anonymise(respondent, known)
    closed = case.closed_at or case.updated_at or utcnow()
    local = _local_date(closed)
    searchable = " ".join([facts, respondent, *summary.get("other", [])])
    agreed = None
    if terms is not None:
        agreed = round_fen(
            int(terms.get("refund_fen") or 0) + int(terms.get("compensation_fen") or 0)
        )
    return {
        "case_id": case.id,
        "committee_id": case.committee_id,
        "category": case.category or "other",
        "outcome": outcome_of(case, path, terms is not None).value,
        "respondent_name": respondent[:120],
        "facts": facts,
        "claims": [str(o) for o in case.outcomes or []],
        "claimed_fen": round_fen(case.amount_fen),
        "agreed_fen": agreed or None,
        "terms": summary,
        "working_days": _working_days(case, calendar),
        "closed_month": local.replace(day=1),
        "search_text": search_form(searchable),
        "fingerprint": to_bytes(fingerprint(facts)),
        "created_at": utcnow(),
    }


def _library_cases() -> Any:
    """Cases at the end of their road: closed, or withdrawn once the committee accepted them
    (a withdrawal before review teaches nothing about solutions); not rejected or ineligible."""
    return or_(
        Case.status == Status.CLOSED.value,
        and_(Case.status == Status.WITHDRAWN.value, Case.accepted_at.is_not(None)),
    )


@dataclass
class SyncReport:
    added: int = 0
    skipped: int = 0  # cases whose personal data could not be read (logged)
    more: bool = False


async def sync_library(
    db: AsyncSession, vault: DataVault, *, batch: int = 100, batches: int | None = None
) -> SyncReport:
    """Add an entry for every library case that has none, ``batch`` cases per transaction
    (at most ``batches`` of them; all when None). Idempotent: a case that has an entry is
    never read again, and an entry added meanwhile by another process wins (the insert skips
    the conflict)."""
    report = SyncReport()
    calendar: WorkCalendar | None = None
    done = 0
    while batches is None or done < batches:
        has_entry = select(LibraryEntry.id).where(LibraryEntry.case_id == Case.id).exists()
        pending = list(
            await db.scalars(
                select(Case)
                .where(_library_cases(), ~has_entry)
                .order_by(Case.closed_at, Case.id)
                .limit(batch)
            )
        )
        if not pending:
            report.more = False
            break
        done += 1
        if calendar is None:
            calendar = await load_calendar(db)
        ids = [c.id for c in pending]
        paths: dict[int, set[str]] = {i: set() for i in ids}
        for case_id, status in await db.execute(
            select(CaseEvent.case_id, CaseEvent.to_status)
            .where(CaseEvent.case_id.in_(ids), CaseEvent.to_status.is_not(None))
            .distinct()
        ):
            if status is not None:
                paths[case_id].add(status)
        effective = await db.execute(
            select(Agreement.case_id, AgreementVersion.terms)
            .join(
                AgreementVersion,
                and_(
                    AgreementVersion.agreement_id == Agreement.id,
                    AgreementVersion.number == Agreement.current_version,
                ),
            )
            .where(
                Agreement.case_id.in_(ids),
                Agreement.status == AgreementStatus.EFFECTIVE.value,
            )
        )
        terms: dict[int, dict[str, Any]] = {row[0]: row[1] for row in effective}
        people = await known_people(db, vault, pending)
        rows = []
        for case in pending:
            try:
                rows.append(
                    build_entry(case, people[case.id], paths[case.id], terms.get(case.id), calendar)
                )
            except Exception:  # an unreadable ciphertext, say: never publish it half-done
                logger.exception("library: case %s left out of this round", case.id)
                report.skipped += 1
        if rows:
            insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
            await db.execute(
                insert(LibraryEntry).values(rows).on_conflict_do_nothing(index_elements=["case_id"])
            )
        await db.commit()
        report.added += len(rows)
        report.more = len(pending) == batch and bool(rows)
        if not report.more:
            break
    return report


class LibraryLoop(BackgroundLoop):
    """Runs :func:`sync_library` one batch at a time: at start, then every ``interval``
    seconds (a case closed minutes ago may wait that long to appear), at once when woken,
    and straight on while batches are full (the first run over an existing database)."""

    name = "jiefen-library"
    log = logger

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        vault: DataVault,
        *,
        interval: float = 600.0,
        batch: int = 100,
    ) -> None:
        super().__init__(interval)
        self.sessionmaker = sessionmaker
        self.vault = vault
        self.batch = batch

    async def run_once(self) -> bool:
        async with session_scope(self.sessionmaker) as db:
            report = await sync_library(db, self.vault, batch=self.batch, batches=1)
        if report.added or report.skipped:
            logger.info("Library: %s entries added, %s cases skipped", report.added, report.skipped)
        return report.more


# -- search ---------------------------------------------------------------------------------

MAX_QUERY = 200
PER_PAGE = 20
MAX_PAGE = 50
# Lists count at most this many matches (as the case list does).
COUNT_CAP = 1000


@dataclass(frozen=True)
class LibraryQuery:
    q: str = ""
    category: str = ""
    outcome: str = ""
    page: int = 1
    per_page: int = PER_PAGE


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _pair_index(q: str) -> str | None:
    """The character pair to look up for a two-character query of two word characters."""
    pairs = bigram_set(q)
    if len(q) == 2 and len(pairs) == 1 and q.isalnum():
        return pairs[0]
    return None


def _text_filter(db: AsyncSession, query: Select[Any], q: str) -> tuple[Select[Any], Any]:
    """``query`` narrowed to entries whose search text contains ``q``, and the column to order
    by (newest entry first). Three characters or more: the trigram index; two word characters:
    the character-pair index; else a scan. Every way means "contains ``q``", so both databases
    find exactly the same entries."""
    sqlite = db.get_bind().dialect.name == "sqlite"
    pair = _pair_index(q)
    if sqlite and (len(q) >= 3 or pair is not None):
        name, phrase = (
            ("cases_fts_library", fts_phrase(q))
            if len(q) >= 3
            else (
                "cases_bigrams_library",
                fts_phrase(pair or ""),
            )
        )
        hits = sa_table(name, column("rowid"))
        narrowed = query.join(hits, hits.c.rowid == LibraryEntry.id).where(
            text(f"{name} MATCH :phrase").bindparams(phrase=phrase)
        )
        return narrowed, hits.c.rowid
    if not sqlite and len(q) < 3 and pair is not None:
        clause: Any = text(
            "library_entries.search_bigrams @> ARRAY[CAST(:pair AS text)]"
        ).bindparams(pair=pair)
    else:
        clause = LibraryEntry.search_text.like(_like(q), escape="\\")
    # PostgreSQL: "+ 0" keeps the planner on the text index rather than walking the primary
    # key backwards and testing every entry (see cases.service._search_ids_postgres).
    order = LibraryEntry.id + 0 if not sqlite else LibraryEntry.id
    return query.where(clause), order


async def search_library(db: AsyncSession, query: LibraryQuery) -> tuple[list[LibraryEntry], int]:
    """One page of entries matching ``query``, newest first, and how many match (counted up to
    COUNT_CAP + 1)."""
    ids = select(LibraryEntry.id)
    if query.category:
        ids = ids.where(LibraryEntry.category == query.category)
    if query.outcome:
        ids = ids.where(LibraryEntry.outcome == query.outcome)
    order: Any = LibraryEntry.id
    q = search_form(query.q)
    if q:
        ids, order = _text_filter(db, ids, q)
    capped = ids.order_by(order.desc()).limit(COUNT_CAP + 1).subquery()
    total = await db.scalar(select(func.count()).select_from(capped)) or 0
    offset = (max(1, query.page) - 1) * query.per_page
    page_ids = list(
        await db.scalars(ids.order_by(order.desc()).offset(offset).limit(query.per_page))
    )
    if not page_ids:
        return [], total
    by_id = {
        e.id: e for e in await db.scalars(select(LibraryEntry).where(LibraryEntry.id.in_(page_ids)))
    }
    return [by_id[i] for i in page_ids if i in by_id], total


async def get_entry(db: AsyncSession, entry_id: int) -> LibraryEntry:
    entry = await db.get(LibraryEntry, entry_id)
    if entry is None:
        raise NotFound
    return entry


# -- similar cases ----------------------------------------------------------------------------

# Entries compared per category: the newest ones (a MinHash comparison is cheap; reading
# fingerprints is what costs, 512 bytes each).
POOL = 5000
SIMILAR = 10  # shown from the case's own category
OTHERS = 5  # shown from other categories when the category gives fewer than SIMILAR
MIN_SIMILARITY = 0.05
_EMPTY = to_bytes(fingerprint(""))


@dataclass
class Similar:
    entry: LibraryEntry
    similarity: float  # estimated Jaccard similarity of the character trigrams, 0 to 1
    same_category: bool

    @property
    def percent(self) -> int:
        return round(self.similarity * 100)


@dataclass
class SimilarResult:
    facts: str  # the case's facts as compared (anonymised like the entries')
    same: list[Similar] = field(default_factory=list)
    other: list[Similar] = field(default_factory=list)


def _rank(
    rows: Sequence[tuple[int, bytes]], query: np.ndarray[Any, Any], limit: int
) -> list[tuple[int, float]]:
    usable = [(i, fp) for i, fp in rows if len(fp) == len(_EMPTY) and fp != _EMPTY]
    if not usable or limit <= 0:
        return []
    matrix = np.frombuffer(b"".join(fp for _, fp in usable), dtype="<u4").reshape(len(usable), -1)
    scores = (matrix == query).mean(axis=1)
    order = np.argsort(-scores, kind="stable")[:limit]
    return [(usable[k][0], float(scores[k])) for k in order if float(scores[k]) >= MIN_SIMILARITY]


async def similar_entries(
    db: AsyncSession, vault: DataVault, case: Case, *, limit: int = SIMILAR, others: int = OTHERS
) -> SimilarResult:
    """The entries whose facts are most like ``case``'s: of its category first, ranked by
    MinHash similarity; from other categories only when its own gives fewer than ``limit``."""
    known = (await known_people(db, vault, [case]))[case.id]
    facts = anonymise(case.facts or "", known)
    result = SimilarResult(facts=facts)
    if not normalise(facts):
        return result
    query = np.frombuffer(to_bytes(fingerprint(facts)), dtype="<u4")

    async def pool(*where: Any) -> list[tuple[int, bytes]]:
        rows = await db.execute(
            select(LibraryEntry.id, LibraryEntry.fingerprint)
            .where(LibraryEntry.case_id != case.id, *where)
            .order_by(LibraryEntry.id.desc())
            .limit(POOL)
        )
        return [(i, bytes(fp)) for i, fp in rows]

    category = case.category or "other"
    same = _rank(await pool(LibraryEntry.category == category), query, limit)
    other: list[tuple[int, float]] = []
    if len(same) < limit:
        other = _rank(await pool(LibraryEntry.category != category), query, others)
    wanted = [i for i, _ in same + other]
    if not wanted:
        return result
    entries = {
        e.id: e for e in await db.scalars(select(LibraryEntry).where(LibraryEntry.id.in_(wanted)))
    }
    result.same = [Similar(entries[i], s, True) for i, s in same if i in entries]
    result.other = [Similar(entries[i], s, False) for i, s in other if i in entries]
    return result
