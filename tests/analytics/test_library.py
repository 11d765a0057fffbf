"""The similar-case library, on both databases: closed cases seeded with realistic personal data
(names, identity numbers with valid check characters, mobile and landline numbers, bank cards,
e-mail and WeChat accounts, in several writings) become entries in which none of it can be
found; amounts are rounded, outcomes and agreed terms kept; the sync is idempotent and batched;
search finds the same entries on SQLite and PostgreSQL; similar cases are ranked."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from sqlalchemy import func, select

from portal.accounts.models import User
from portal.agreements import service as agreements
from portal.agreements.terms import Terms
from portal.analytics import library
from portal.analytics.library import Known, LibraryQuery, anonymise, round_fen
from portal.analytics.library_models import LibraryEntry
from portal.cases import service as cases
from portal.cases.models import Case
from portal.notify.models import Notification
from portal.policy import Role
from portal.validators import resident_id_check_character
from tests.factories import (
    PDF,
    Person,
    make_case,
    make_committee,
    make_draft,
    make_firm,
    make_user,
    verify_phone,
)


def resident_id(first17: str) -> str:
    return first17 + resident_id_check_character(first17)


# Check characters computed, not typed: the first ends in X.
ID_ZHANG = resident_id("11010519900307123")
ID_LIU = resident_id("31010719850612002")
ID_CHEN = resident_id("44030419920228004")
OLD_ID = "110105491231002"  # a 15-digit card of the old kind
PHONE_ZHANG = "13912345678"
PHONE_LIU = "18612345678"
PHONE_AGENT = "15012345678"
PHONE_CHEN = "13612345678"
PHONE_MEDIATOR = "13700001111"
CARD = "6222021234567890123"
CARD_2 = "6217000010001234567"


def spaced(digits: str, groups: tuple[int, ...]) -> str:
    out, at = [], 0
    for size in groups:
        out.append(digits[at : at + size])
        at += size
    return " ".join(out)


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in text)


FACTS_ZHANG = (
    f"本人张伟，身份证号{ID_ZHANG}，手机{PHONE_ZHANG}。2023年3月5日我在被申请人的营业厅办理信用卡"
    f"（卡号{spaced(CARD, (4, 4, 4, 4, 3))}），业务员李明向我推荐账单分期，称“零手续费”，"
    "实际每期收取手续费，合计12,345.67元，另收年费壹仟捌佰捌拾捌元。我多次拨打客服电话，客服小王"
    "让我联系客户经理王芳（电话138-0013-8000，座机（021）62345678），对方一直推脱。"
    f"身份证也可写作{spaced(ID_ZHANG.lower(), (6, 8, 4))}，手机 +86 139 1234 5678 或 "
    f"{fullwidth(PHONE_ZHANG)}，邮箱zhangwei1990@163.com，微信号：zhangwei_1990。"
    "住址上海市普陀区中山北路3663号5号楼1203室。张先生（即本人）要求退还手续费。"
)
FACTS_LIU = (
    f"委托人刘洋（身份证{ID_LIU}，电话{spaced(PHONE_LIU, (3, 4, 4))}）于2024年1月在被申请人处办理"
    f"信用卡，业务员李明向其推荐账单分期，称零手续费，实际每期收取手续费，合计8,765元。代理人赵敏"
    f"（手机{PHONE_AGENT[:3]}-{PHONE_AGENT[3:7]}-{PHONE_AGENT[7:]}）多次联系客服，刘女士要求退还"
    f"手续费。还款账户{CARD_2}，旧身份证{OLD_ID}。"
)
FACTS_CHEN = (
    f"陈静（{ID_CHEN}，{PHONE_CHEN}）购买重大疾病保险，住院后申请理赔被拒，保险公司称未如实告知。"
    "理赔金额人民币150,000元。陈女士认为投保时销售人员未询问病史。"
)
SEEDED_NAMES = ["张伟", "李明", "王芳", "刘洋", "赵敏", "陈静", "王调解员", "李经理", "周主任"]
SEEDED_NUMBERS = [
    ID_ZHANG,
    ID_LIU,
    ID_CHEN,
    OLD_ID,
    PHONE_ZHANG,
    PHONE_LIU,
    PHONE_AGENT,
    PHONE_CHEN,
    PHONE_MEDIATOR,
    "13800138000",
    "62345678",
    CARD,
    CARD_2,
]
SEEDED_OTHER = ["zhangwei1990@163.com", "zhangwei_1990", "3663号", "1203室"]


def assert_clean(text: str, where: str) -> None:
    """None of the seeded personal data, in any writing: names as written; numbers with every
    separator removed from the text (so "139 1234 5678" cannot hide 13912345678)."""
    for name in SEEDED_NAMES + SEEDED_OTHER:
        assert name not in text, f"{name} found in {where}"
    digits = re.sub(r"[^0-9Xx]", "", text.translate({c: c - 0xFEE0 for c in range(0xFF10, 0xFF1A)}))
    for number in SEEDED_NUMBERS:
        assert number.upper() not in digits.upper(), f"{number} found in {where}"


# -- anonymisation, without a database --------------------------------------------------------


def test_amounts_are_rounded_to_two_significant_figures() -> None:
    assert round_fen(1_234_567) == 1_200_000
    assert round_fen(1_250_00) == 1_300_00
    assert round_fen(8_500) == 8_500
    assert round_fen(99_950) == 1_000_00
    assert round_fen(0) == 0 and round_fen(None) is None
    assert library.approx_yuan(1_200_000) == "¥12,000"
    assert library.chinese_number("壹万贰仟叁佰肆拾伍") == 12345
    assert library.chinese_number("一亿二千万") == 120_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("合计12,345.67元", "合计约12,000元"),
        ("人民币壹万贰仟叁佰肆拾伍元整", "约人民币12,000元"),
        ("损失一万二千三百四十五元", "损失约12,000元"),
        ("共计约5.67万元", "共计约5.7万元"),
        ("¥8,888", "约¥8,900"),
        ("手续费50元", "手续费50元"),
        ("一万二千元", "一万二千元"),
        ("2023年3月5日签约", "2023年3月签约"),
        ("2023-03-05签约", "2023年3月签约"),
        ("2019-2023年间", "2019-2023年间"),
        (
            "张先生、李女士、王某某、赵总、老王、小李、Z先生",
            "某先生、某女士、某某、某总、老某、小某、某先生",
        ),
        (
            "业务员李明说，客户经理张晓东推荐，姓名：王伟，我叫刘洋",
            "业务员某某说，客户经理某某推荐，姓名：某某，我叫某某",
        ),
        ("车牌沪A12345", "车牌【车牌号】"),
        ("Mr Zhang called", "Mr X called"),
        # Everyday words that look like names are left alone.
        ("我和总经理沟通，公司总部说订单总额不变", "我和总经理沟通，公司总部说订单总额不变"),
        (
            "小程序里的老顾客办了小额贷款，投资顾问费用",
            "小程序里的老顾客办了小额贷款，投资顾问费用",
        ),
        (
            "员工任务、销售范围、客服付款页面、高级经理",
            "员工任务、销售范围、客服付款页面、高级经理",
        ),
    ],
)
def test_patterns(text: str, expected: str) -> None:
    assert anonymise(text) == expected


def test_known_people_and_numbers_in_every_writing() -> None:
    known = [
        Known("name", "张伟", "申请人"),
        Known("id", ID_ZHANG, "【身份证号】"),
        Known("phone", PHONE_ZHANG, "【手机号】"),
        Known("name", "王调解员", "调解员"),
    ]
    out = anonymise(FACTS_ZHANG + "申请人张 伟。王调解员主持。", known)
    assert_clean(out, "anonymised facts")
    assert out.startswith("本人申请人，身份证号【身份证号】，手机【手机号】。2023年3月")
    assert "业务员某某" in out and "客户经理某某" in out and "调解员主持" in out
    assert "合计约12,000元" in out and "年费约1,900元" in out
    assert "【账号】" in out and "【邮箱】" in out and "【门牌号】" in out and "【电话】" in out
    # The placeholder is not read as a surname (申) with a given name.
    assert "申请人。" in out and "申请人申请人" not in out
    # Without the case's data the patterns still catch every number.
    assert_clean(anonymise(FACTS_LIU), "facts without known data")


# -- the library over real databases ----------------------------------------------------------


@dataclass
class World:
    mediator: Person
    other_mediator: Person
    admin: Person
    rep: Person
    claimant: Person
    agent: Person
    chen: Person
    platform: Person
    cases: dict[str, int] = field(default_factory=dict)


async def _transition(app: Any, person: Person, case_id: int, name: str, reason: str = "") -> None:
    async with app.starlette.state.db() as db:
        user = await db.get(User, person.id)
        case = await db.get(Case, case_id)
        assert user is not None and case is not None
        await cases.apply_transition(db, case, user, name, reason)


async def _sign_agreement(app: Any, w: World, case_id: int) -> None:
    """The mediator drafts terms with no payment (so the case closes when they take effect);
    both sides sign with password, code and name."""
    state = app.starlette.state
    terms = Terms(
        fee_waiver_fen=1_234_567,
        interest_waiver_fen=45_678,
        apology=True,
        other=("被申请人于2024年5月1日前电话（13912345678）告知张伟处理结果",),
        withdraw_complaints=True,
    )
    async with state.db() as db:
        mediator = await db.get(User, w.mediator.id)
        assert mediator is not None
        await agreements.start(db, state.vault, await agreements.access(db, case_id), mediator)
        await agreements.save_version(
            db, state.vault, await agreements.access(db, case_id), mediator, terms, ""
        )
        await agreements.open_signing(db, await agreements.access(db, case_id), mediator)
    for person in (w.claimant, w.rep):
        async with state.db() as db:
            user = await db.get(User, person.id)
            assert user is not None
            found = await agreements.access(db, case_id)
            await agreements.send_code(db, state.settings, state.vault, found, user)
            code = await db.scalar(
                select(Notification.params)
                .where(Notification.user_id == person.id, Notification.body_msgid.contains("sign"))
                .where(Notification.channel.in_(["sms", "email"]))
                .order_by(Notification.id.desc())
                .limit(1)
            )
            assert code is not None
            found = await agreements.access(db, case_id)
            await agreements.sign(
                db,
                state.settings,
                found,
                user,
                version_number=2,
                password=person.password,
                code=str(code["code"]),
                typed_name=user.display_name,
            )


async def _agent_case(app: Any, w: World, firm: Any) -> int:
    """刘洋's case, filed by 赵敏 with a power of attorney, assigned to the mediator."""
    state = app.starlette.state
    draft = await make_draft(app, w.agent, firm, facts=FACTS_LIU, name="刘洋", id_number=ID_LIU)
    async with state.db() as db:
        agent = await db.get(User, w.agent.id)
        case = await db.get(Case, draft.id)
        admin = await db.get(User, w.admin.id)
        assert agent is not None and case is not None and admin is not None
        await cases.save_claimant(
            db,
            state.vault,
            case,
            agent,
            filed_as="agent",
            name="刘洋",
            id_number=ID_LIU,
            agent_name="赵敏",
            agent_phone=PHONE_AGENT,
            claimant_phone=PHONE_LIU,
        )
        blob = state.blobs.put_bytes(PDF + b"power of attorney")
        await cases.add_material(
            db,
            case,
            agent,
            kind="power_of_attorney",
            filename="poa.pdf",
            content_type="application/pdf",
            size=blob.size,
            sha256=blob.sha256,
        )
        case = await cases.submit_case(db, state.vault, case, agent)
        case = await cases.accept_case(db, case, admin)
        case = await cases.assign_mediator(db, case, admin, w.mediator.id)
        return case.id


async def build(app: Any) -> World:
    committee = await make_committee(app, categories=["credit_card", "insurance"])
    firm = await make_firm(app, name="某某消费金融有限公司")
    w = World(
        mediator=await make_user(
            app, Role.MEDIATOR, committee=committee, name="王调解员", phone=PHONE_MEDIATOR
        ),
        other_mediator=await make_user(app, Role.MEDIATOR, name="别处调解员"),
        admin=await make_user(app, Role.COMMITTEE_ADMIN, committee=committee, name="周主任"),
        rep=await make_user(app, Role.FIRM_REP, firm=firm, name="李经理"),
        claimant=await make_user(app, Role.CONSUMER, phone=PHONE_ZHANG, name="张伟"),
        agent=await make_user(app, Role.CONSUMER, phone=PHONE_AGENT, name="赵敏"),
        chen=await make_user(app, Role.CONSUMER, phone=PHONE_CHEN, name="陈静"),
        platform=await make_user(app, Role.PLATFORM_ADMIN),
    )
    for person in (w.claimant, w.agent, w.chen):
        await verify_phone(app, person)
    # Settled by an agreement with no payment: closed when it takes effect.
    settled = await make_case(
        app,
        w.claimant,
        firm,
        status="assigned",
        mediator_id=w.mediator.id,
        facts=FACTS_ZHANG,
        name="张伟",
        id_number=ID_ZHANG,
        amount_fen=1_234_567,
    )
    await _transition(app, w.mediator, settled.id, "start_mediation")
    await _sign_agreement(app, w, settled.id)
    # Failed, transferred to litigation, closed.
    transferred = await _agent_case(app, w, firm)
    await _transition(app, w.mediator, transferred, "start_mediation")
    await _transition(app, w.mediator, transferred, "fail", "双方差距过大")
    await _transition(app, w.mediator, transferred, "transfer")
    await _transition(app, w.mediator, transferred, "close")
    # Withdrawn after acceptance (insurance).
    withdrawn = await make_case(
        app,
        w.chen,
        firm,
        status="accepted",
        category="insurance",
        facts=FACTS_CHEN,
        name="陈静",
        id_number=ID_CHEN,
        amount_fen=15_000_000,
    )
    await _transition(app, w.chen, withdrawn.id, "withdraw", "已与保险公司和解")
    # Still open (in the mediator's hands): not in the library.
    still_open = await make_case(
        app,
        w.claimant,
        firm,
        status="assigned",
        mediator_id=w.mediator.id,
        facts="客户经理向我推荐账单分期，称零手续费，实际每期收取手续费，我要求退还手续费。",
        name="张伟",
        id_number=ID_ZHANG,
    )
    w.cases = {
        "settled": settled.id,
        "transferred": transferred,
        "withdrawn": withdrawn.id,
        "open": still_open.id,
    }
    return w


async def sync(app: Any, **kw: Any) -> library.SyncReport:
    state = app.starlette.state
    async with state.db() as db:
        return await library.sync_library(db, state.vault, **kw)


async def entries(app: Any) -> dict[int, LibraryEntry]:
    async with app.starlette.state.db() as db:
        return {e.case_id: e for e in await db.scalars(select(LibraryEntry))}


def entry_text(entry: LibraryEntry) -> str:
    return " ".join(
        [
            entry.facts,
            entry.respondent_name,
            entry.search_text,
            json.dumps(entry.terms, ensure_ascii=False),
            json.dumps(entry.claims, ensure_ascii=False),
        ]
    )


async def test_closed_cases_become_anonymised_entries(app: Any) -> None:
    w = await build(app)
    async with app.starlette.state.db() as db:
        statuses = dict((await db.execute(select(Case.id, Case.status))).all())
    assert statuses[w.cases["settled"]] == "closed", statuses
    assert statuses[w.cases["transferred"]] == "closed"
    assert statuses[w.cases["withdrawn"]] == "withdrawn"

    # In batches of one: each call adds one case and says whether more wait.
    first = await sync(app, batch=1, batches=1)
    assert (first.added, first.more) == (1, True)
    rest = await sync(app, batch=2)
    assert rest.added == 2 and not rest.more
    again = await sync(app)
    assert (again.added, again.more) == (0, False)  # idempotent

    found = await entries(app)
    assert set(found) == {w.cases["settled"], w.cases["transferred"], w.cases["withdrawn"]}
    for entry in found.values():
        assert_clean(entry_text(entry), f"entry of case {entry.case_id}")
        assert entry.closed_month.day == 1 and entry.closed_month <= date.today()
        assert len(entry.fingerprint) == 512

    settled = found[w.cases["settled"]]
    assert settled.outcome == "fulfilled" and settled.category == "credit_card"
    assert settled.claimed_fen == 1_200_000  # 12,345.67 yuan, rounded
    assert settled.agreed_fen is None  # nothing paid: fees waived instead
    assert settled.terms["fee_waiver_fen"] == 1_200_000
    assert settled.terms["interest_waiver_fen"] == 46_000
    assert settled.terms["apology"] and settled.terms["withdraw_complaints"]
    assert settled.terms["other"] == ["被申请人于2024年5月前电话（【手机号】）告知申请人处理结果"]
    assert settled.respondent_name == "某某消费金融有限公司"  # a firm is not a person
    assert settled.working_days is not None and settled.working_days >= 0
    assert "业务员某某" in settled.facts and "合计约12,000元" in settled.facts
    assert settled.claims == ["refund"]

    transferred = found[w.cases["transferred"]]
    assert transferred.outcome == "transferred" and transferred.terms == {}
    # The claimant (刘洋) and the agent who filed (赵敏) by their roles.
    assert transferred.facts.startswith("委托人申请人（身份证【身份证号】，电话【手机号】）")
    assert "代理人（手机【手机号】）" in transferred.facts
    assert found[w.cases["withdrawn"]].outcome == "withdrawn"
    assert found[w.cases["withdrawn"]].claimed_fen == 15_000_000


async def test_search_finds_the_same_on_both_databases(app: Any) -> None:
    w = await build(app)
    await sync(app)
    settled, transferred, withdrawn = (
        w.cases["settled"],
        w.cases["transferred"],
        w.cases["withdrawn"],
    )
    async with app.starlette.state.db() as db:
        ids = {e.id: e.case_id for e in await db.scalars(select(LibraryEntry))}

        async def find(**kw: Any) -> list[int]:
            rows, total = await library.search_library(db, LibraryQuery(**kw))
            assert total == len(rows)
            return [ids[r.id] for r in rows]

        # Three characters or more (trigrams), two (pairs), newest entry first.
        assert await find(q="账单分期") == [transferred, settled]
        assert await find(q="分期") == [transferred, settled]
        assert await find(q="理赔") == [withdrawn]
        assert await find(q="重大疾病保险") == [withdrawn]
        # Case and width do not matter; the firm's name is searchable.
        assert await find(q="某某消费金融") == [withdrawn, transferred, settled]
        assert await find(q="ＭＲ") == [] and await find(q="mr") == []
        # Filters.
        assert await find(q="分期", outcome="transferred") == [transferred]
        assert await find(category="insurance") == [withdrawn]
        assert await find(outcome="fulfilled") == [settled]
        # The placeholders are there; the people are not.
        assert await find(q="业务员某某") == [transferred, settled]
        for name in ("张伟", "刘洋", "赵敏", "李明", "王芳", "陈静"):
            assert await find(q=name) == [], name
        assert await find(q=PHONE_ZHANG) == [] and await find(q=ID_ZHANG[:10]) == []
        # LIKE's wildcards and FTS5's syntax are plain characters here.
        assert await find(q="100%") == [] and await find(q='"分期" OR') == []
        assert await find(q="a_b") == []
        # Pages.
        rows, total = await library.search_library(db, LibraryQuery(per_page=2, page=2))
        assert total == 3 and [ids[r.id] for r in rows] == [settled]


async def test_similar_cases_are_ranked_by_their_facts(app: Any) -> None:
    w = await build(app)
    await sync(app)
    state = app.starlette.state
    async with state.db() as db:
        # A new credit-card case much like the two closed ones.
        probe = await db.get(Case, w.cases["open"])
        assert probe is not None
        probe.facts = FACTS_LIU.replace("刘洋", "孙丽")
        result = await library.similar_entries(db, state.vault, probe)
        same = [(s.entry.case_id, s.percent) for s in result.same]
        other = [s.entry.case_id for s in result.other]
        await db.rollback()  # the probe's facts were never saved
    assert [case_id for case_id, _ in same] == [w.cases["transferred"], w.cases["settled"]]
    assert same[0][1] > 50 and same[0][1] > same[1][1] >= 5
    assert all(s.same_category for s in result.same)
    assert "孙丽" not in result.facts  # compared as anonymised text, like the entries
    assert other in ([], [w.cases["withdrawn"]])


async def test_the_loop_fills_the_library(app: Any) -> None:
    w = await build(app)
    state = app.starlette.state
    loop = library.LibraryLoop(state.db, state.vault, interval=3600, batch=2)
    assert await loop.run_once() is True  # two of three: more waiting
    assert await loop.run_once() is False
    loop.start()
    await loop.stop()
    async with state.db() as db:
        assert await db.scalar(select(func.count()).select_from(LibraryEntry)) == 3
    assert w.cases["open"] not in await entries(app)
