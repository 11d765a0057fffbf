"""Cases benchmark: the staff case list, a case page and full-text search over HTTP.

    .venv/bin/python bench/cases.py                      # both backends, 100,000 cases
    .venv/bin/python bench/cases.py --backend sqlite --cases 20000 --requests 500 --no-docs

For each backend (SQLite, PostgreSQL) it creates a fresh database (a file in a temporary
directory; a new PostgreSQL database ``jiefen_bench_<random>``, dropped at the end), migrates it,
seeds committees, firms, mediators, a committee administrator and ``--cases`` cases with their
timelines by bulk inserts, starts the real server (``jiefen serve``) in its own process, logs in
as the committee administrator and measures, with ``--concurrency`` concurrent clients, the
latency of: the filtered staff list (50 per page), a case page, a full-text search, and a bare
Starlette page served by uvicorn in its own process (the reference). It prints a table with p50,
p99, mean, requests per second and errors against the issue's targets, the server's memory and
the SQL statements each page runs, and writes the results into docs/benchmarks.md (and a chart,
docs/benchmarks-cases.svg) unless ``--no-docs`` is given.

All traffic goes to 127.0.0.1. Every phase is bounded (``--max-seconds`` per measured endpoint,
a timeout per request); server processes, the temporary directory and the PostgreSQL database
are removed even when the run fails or is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import math
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

T = TypeVar("T")
DOCS = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks-cases.svg"
DEFAULT_POSTGRES_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
HOST = "127.0.0.1"

# Targets from the issue: p99 in milliseconds.
TARGETS_MS = {"list": 100.0, "case": 100.0, "search": 200.0}
ENDPOINTS = [
    ("bare", "bare Starlette page"),
    ("list", "staff list, filtered"),
    ("case", "case page"),
    ("search", "full-text search"),
]

# -- seed data ------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


COMMITTEES = [
    {
        "name": "普陀区科技金融产业解纷中心",
        "name_en": "Putuo Tech-Finance Dispute Resolution Centre",
        "region": "上海市普陀区",
        "case_prefix": "PT",
        "share": 0.7,
    },
    {
        "name": "黄浦区金融纠纷人民调解委员会",
        "name_en": "Huangpu Financial Disputes Mediation Committee",
        "region": "上海市黄浦区",
        "case_prefix": "HP",
        "share": 0.2,
    },
    {
        "name": "静安区消费纠纷人民调解委员会",
        "name_en": "Jing'an Consumer Disputes Mediation Committee",
        "region": "上海市静安区",
        "case_prefix": "JA",
        "share": 0.1,
    },
]
ALL_CATEGORIES = [
    "securities_advisory",
    "credit_card",
    "small_loan",
    "small_business_loan",
    "personal_business_loan",
    "insurance",
    "bank_wealth",
    "consumer",
    "other",
]
CATEGORY_WEIGHTS = {
    "credit_card": 30,
    "small_loan": 20,
    "consumer": 12,
    "securities_advisory": 10,
    "insurance": 8,
    "bank_wealth": 6,
    "small_business_loan": 5,
    "personal_business_loan": 4,
    "other": 5,
}
CATEGORY_INDUSTRY = {
    "credit_card": "banking",
    "small_loan": "lending",
    "small_business_loan": "banking",
    "personal_business_loan": "lending",
    "securities_advisory": "securities",
    "insurance": "insurance",
    "bank_wealth": "banking",
    "consumer": "consumer",
    "other": "payment",
}
FIRM_KINDS = {
    "banking": ["银行股份有限公司", "农村商业银行股份有限公司", "银行信用卡中心"],
    "lending": ["消费金融有限公司", "小额贷款有限公司", "融资担保有限公司"],
    "securities": ["证券投资咨询有限公司", "投资顾问有限公司", "证券股份有限公司"],
    "insurance": ["人寿保险股份有限公司", "财产保险股份有限公司", "保险经纪有限公司"],
    "consumer": ["商贸有限公司", "健身管理有限公司", "教育培训有限公司", "电子商务有限公司"],
    "payment": ["支付科技有限公司", "网络科技有限公司"],
}
FIRM_WORDS = _words(
    "华信 鑫源 安泰 中融 汇通 恒丰 金盛 瑞达 信诚 嘉禾 永安 宏图 富邦 兴业 国泰 "
    "长江 东方 明德 天元 君安 锦程 海通 新华 盛世 泰康 博远 昌隆 和信 益民 众诚"
)
CITIES = _words("上海 北京 深圳 广州 杭州 南京 苏州 成都 重庆 武汉 天津 西安")
SURNAMES = _words("王 李 张 刘 陈 杨 黄 赵 吴 周 徐 孙 马 朱 胡 郭 何 林 高 罗")
GIVEN = _words("伟 芳 娜 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀英 霞 平 刚 桂英 丹 萍")

# The facts: an opening, grievances of the category and of any category, details, a request.
PRODUCTS = {
    "credit_card": ["信用卡", "信用卡账单分期", "白金信用卡", "联名信用卡", "现金分期"],
    "small_loan": ["网络小额贷款", "消费贷款", "现金贷", "乐享贷", "随借随还贷款"],
    "small_business_loan": ["小微企业经营贷款", "税务贷", "抵押经营贷"],
    "personal_business_loan": ["个人经营贷款", "商户贷", "个体工商户贷款"],
    "securities_advisory": ["投资顾问服务", "荐股会员服务", "金牛宝策略服务", "股票培训课程"],
    "insurance": ["分红型寿险", "安心保两全险", "重大疾病保险", "优选年金险", "车险"],
    "bank_wealth": ["银行理财产品", "鑫享理财28天", "稳盈一号", "结构性存款", "私募基金"],
    "consumer": ["健身房会员卡", "预付卡", "星光会员卡", "英语培训课程", "美容护理套餐"],
    "other": ["第三方支付账户", "数字藏品", "网络借贷信息中介服务"],
}
OPENINGS = [
    "{when}我在{firm}办理了{product}",
    "{when}，本人通过手机应用申请了{product}",
    "{when}经朋友介绍在{city}的营业网点购买了{product}",
    "{when}业务员电话联系我推荐{product}",
    "本人于{when}与{firm}签订了{product}合同",
    "{when}我在{city}出差期间通过网页办理了{product}",
]
GRIEVANCES = {
    "credit_card": [
        "分期手续费折算年化利率远高于宣传",
        "未经本人同意开通了账单分期",
        "逾期后被收取高额违约金",
        "年费在未告知的情况下自动扣除",
        "提前还款仍被收取全部分期手续费",
        "信用卡被盗刷后银行拒绝承担责任",
    ],
    "small_loan": [
        "借款时被强制搭售会员服务费",
        "催收人员频繁拨打我的通讯录联系人",
        "暴力催收严重影响了我的工作和生活",
        "砍头息导致实际到手金额不足",
        "提前还款被收取高额违约金",
        "综合年化成本超过了法定上限",
    ],
    "small_business_loan": [
        "经营贷款到期后银行拒绝续贷",
        "抵押物评估价值明显偏低",
        "贷款审批时被要求购买理财产品",
        "利率上调未提前通知",
    ],
    "personal_business_loan": [
        "放款后被要求支付咨询服务费",
        "贷款审批时被要求购买保险",
        "利率上调未提前通知",
        "还款日被单方面变更",
    ],
    "securities_advisory": [
        "对方承诺保证收益并推荐个股",
        "所谓投资顾问服务实际是荐股群",
        "缴纳会员费后服务人员不再回复",
        "推荐的股票连续亏损超过三成",
        "业务员以内幕消息诱导我升级服务",
        "对方未进行风险测评即销售高等级服务",
    ],
    "insurance": [
        "投保时业务员未说明免责条款",
        "出险后保险公司以既往病史为由拒绝理赔",
        "业务员将分红险宣传为存款",
        "退保时只退还了极少的现金价值",
        "续期保费在未通知的情况下被扣除",
    ],
    "bank_wealth": [
        "理财经理承诺保本保息",
        "风险评估问卷由工作人员代填",
        "产品到期后收益远低于业绩比较基准",
        "购买的理财产品实际为代销的私募基金",
        "赎回申请被多次拖延",
    ],
    "consumer": [
        "预付卡商家突然关门停业",
        "购买的商品存在质量问题商家拒绝退换",
        "健身房会员费无法退还",
        "培训机构退费时扣除高额违约金",
        "网购商品与描述不符",
    ],
    "other": [
        "账户资金被无故冻结",
        "平台停止兑付后无法取回本金",
        "客服以系统升级为由拒绝提现",
    ],
}
COMMON_GRIEVANCES = [
    "对方未告知手续费及实际年化利率",
    "客服多次拒绝提供合同原件",
    "工作人员口头承诺可以随时退款",
    "合同条款与宣传内容严重不符",
    "扣款金额与约定不一致",
    "多次投诉至客服热线均无结果",
    "对方以系统原因为由拖延处理",
    "虚假宣传误导我作出了决定",
    "对方擅自将我的个人信息提供给第三方",
    "格式条款加重了消费者的责任",
]
DETAILS = [
    "此事给我造成了很大的精神压力",
    "我已保留了相关聊天记录和通话录音",
    "相关转账记录可以提供",
    "我的家人也因此受到了骚扰",
    "至今未能得到合理的解释",
    "我曾向监管部门反映但建议先行调解",
    "涉及金额{amount}元",
    "对方工作人员态度恶劣",
    "我是退休人员，对金融产品并不了解",
    "对方只同意退还一小部分",
    "合同编号为{contract}",
    "我在{city}工作，不方便到现场处理",
]
REQUESTS = [
    "现要求退还多收取的费用{amount}元",
    "请求调解委员会协调对方退还全部款项",
    "要求对方赔偿经济损失{amount}元并赔礼道歉",
    "希望能够分期偿还剩余欠款并减免利息",
    "要求停止不当催收行为",
    "要求解除合同并退还已付款项",
]
# Searched phrases (2-6 characters) and how often each is asked; all occur in the facts above,
# in firm names or as claimants' names, from very common to rare.
SEARCH_TERMS = [
    "分期",
    "退款",
    "张伟",
    "手续费",
    "违约金",
    "会员费",
    "荐股群",
    "提前还款",
    "暴力催收",
    "保本保息",
    "拒绝理赔",
    "虚假宣传",
    "消费金融",
    "健身房",
    "稳盈一号",
    "金牛宝",
    "安心保",
    "年化利率",
    "私募基金",
    "未告知手续费",
    "投资顾问服务",
    "既往病史",
    "预付卡商家",
    "砍头息",
]
MESSAGES = [
    "请补充提供还款流水。",
    "已与对方公司联系，对方同意协商。",
    "请问下一次调解安排在什么时间？",
    "我方愿意减免部分利息。",
    "材料已经上传，请查收。",
    "对方提出的方案我不能接受。",
]
# Final status -> share of cases (percent). Open cases are recent; finished ones span two years.
STATUS_WEIGHTS = {
    "draft": 3,
    "submitted": 5,
    "needs_info": 2,
    "accepted": 4,
    "rejected": 5,
    "ineligible": 2,
    "assigned": 5,
    "in_mediation": 9,
    "settled": 4,
    "fulfilled": 5,
    "failed": 3,
    "transferred_to_litigation": 2,
    "closed": 43,
    "withdrawn": 8,
}
RECENT = {"draft", "submitted", "needs_info", "accepted", "assigned", "in_mediation", "settled"}
MEDIATION = ["submitted", "accepted", "assigned", "in_mediation"]
PATHS: dict[str, list[list[str]]] = {
    "draft": [[]],
    "submitted": [["submitted"]],
    "needs_info": [["submitted", "needs_info"]],
    "accepted": [["submitted", "accepted"]],
    "rejected": [["submitted", "rejected"]],
    "ineligible": [["submitted", "ineligible"]],
    "assigned": [["submitted", "accepted", "assigned"]],
    "in_mediation": [MEDIATION],
    "settled": [[*MEDIATION, "settled"]],
    "fulfilled": [[*MEDIATION, "settled", "fulfilled"]],
    "failed": [[*MEDIATION, "failed"]],
    "transferred_to_litigation": [[*MEDIATION, "failed", "transferred_to_litigation"]],
    "closed": [[*MEDIATION, "settled", "fulfilled", "closed"], [*MEDIATION, "failed", "closed"]],
    "withdrawn": [["submitted", "withdrawn"], ["submitted", "accepted", "withdrawn"]],
}
TRANSITIONS = {
    "submitted": ("submit", "filer"),
    "needs_info": ("request_info", "staff"),
    "accepted": ("accept", "staff"),
    "rejected": ("reject", "staff"),
    "ineligible": ("mark_ineligible", "staff"),
    "assigned": ("assign", "staff"),
    "in_mediation": ("start_mediation", "mediator"),
    "settled": ("settle", "mediator"),
    "fulfilled": ("fulfil", "mediator"),
    "failed": ("fail", "mediator"),
    "transferred_to_litigation": ("transfer", "mediator"),
    "closed": ("close", "staff"),
    "withdrawn": ("withdraw", "filer"),
}
CLOSED_STATUSES = {"closed", "rejected", "ineligible", "withdrawn"}
BATCH = 5000


def credit_code(n: int) -> str:
    """A valid unified social credit code (GB 32100-2015 check character), unique per n."""
    from portal.validators import USCC_ALPHABET, uscc_check_character

    body = "91310000MA2" + "".join(USCC_ALPHABET[(n // 31**i) % 31] for i in range(6))
    return body + uscc_check_character(body)


def weighted(rng: random.Random, weights: dict[str, int]) -> Callable[[], str]:
    keys, values = list(weights), list(weights.values())
    return lambda: rng.choices(keys, values)[0]


def make_facts(
    rng: random.Random, category: str, firm_name: str, when: datetime, amount_fen: int
) -> str:
    """50-500 characters of a complaint in Chinese, built from the phrases above."""
    target = min(500, max(50, int(rng.triangular(50, 500, 140))))
    product = rng.choice(PRODUCTS[category])
    fill = {
        "when": f"{when.year}年{when.month}月",
        "firm": firm_name,
        "product": product,
        "city": rng.choice(CITIES),
        "amount": f"{amount_fen // 100}",
        "contract": f"{rng.randint(10**9, 10**10 - 1)}",
    }
    parts = [rng.choice(OPENINGS).format(**fill)]
    pool = GRIEVANCES[category] * 2 + COMMON_GRIEVANCES + DETAILS
    text = "，".join(parts)
    while len(text) < target - 20:
        parts.append(rng.choice(pool).format(**fill))
        text = "，".join(parts)
    parts.append(rng.choice(REQUESTS).format(**fill))
    text = "，".join(parts) + "。"
    return text[:500]


@dataclass
class SeedInfo:
    admin_login: str
    admin_password: str
    case_ids: list[int]  # the administrator's committee's submitted cases
    list_paths: list[str]
    search_paths: list[str]
    cases: int = 0
    events: int = 0
    seconds: float = 0.0
    term_matches: dict[str, int] = field(default_factory=dict)
    db_size_mb: float = 0.0


@dataclass
class World:
    """What the case generator draws from: organisations, people, encrypted personal data."""

    now: datetime
    prefixes: list[str]  # per committee index
    committee_ids: list[int]
    admin_ids: list[int]
    mediators: dict[int, list[int]]  # committee id -> mediator ids
    consumers: list[int]
    consumer_phone: dict[int, tuple[bytes, str]]
    firms: dict[str, list[Any]]  # industry -> rows (id, name, credit_code)
    claimants: list[tuple[bytes, str, bytes, str]]
    agent: tuple[bytes, bytes, str]
    counters: Counter[tuple[int, int]] = field(default_factory=Counter)


def make_case(
    rng: random.Random,
    world: World,
    case_id: int,
    created: datetime,
    status: str,
    ci: int,
    category: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One case row in its final ``status`` and its timeline, consistent with each other."""
    committee_id = world.committee_ids[ci]
    filer_id = rng.choice(world.consumers)
    mediator_id = rng.choice(world.mediators[committee_id])
    actors = {"filer": filer_id, "staff": world.admin_ids[ci], "mediator": mediator_id}
    amount = int(math.exp(rng.uniform(math.log(50_000), math.log(50_000_000))))
    firm = None
    if rng.random() < 0.92:
        firm = rng.choice(world.firms[CATEGORY_INDUSTRY[category]])
    firm_name = firm.name if firm else rng.choice(CITIES) + "某某商贸有限公司"
    claimant = rng.choice(world.claimants)
    agent = rng.random() < 0.12
    phone_enc, phone_index = world.consumer_phone[filer_id]
    row: dict[str, Any] = {
        "id": case_id,
        "number": None,
        "committee_id": committee_id,
        "status": status,
        "category": category,
        "filer_id": filer_id,
        "filed_as": "agent" if agent else "self",
        "claimant_name_enc": claimant[0],
        "claimant_name_index": claimant[1],
        "claimant_id_enc": claimant[2],
        "claimant_id_index": claimant[3],
        "claimant_phone_enc": None if agent else phone_enc,
        "claimant_phone_index": None if agent else phone_index,
        "agent_name_enc": world.agent[0] if agent else None,
        "agent_phone_enc": world.agent[1] if agent else None,
        "agent_phone_index": world.agent[2] if agent else None,
        "agent_org": "上海某律师事务所" if agent else "",
        "respondent_firm_id": firm.id if firm else None,
        "respondent_name": firm_name,
        "respondent_credit_code": firm.credit_code if firm else None,
        "amount_fen": amount,
        "outcomes": rng.sample(["refund", "compensation", "waiver", "apology"], 2),
        "facts": make_facts(rng, category, firm_name, created, amount),
        "incident_date": (created - timedelta(days=rng.randint(10, 400))).date(),
        "eligibility": dict.fromkeys(ELIGIBILITY, False),
        "complexity": None,
        "triage_reasons": [],
        "mediator_id": None,
        "duplicate_of_id": None,
        "requested_items": ["contract"] if status == "needs_info" else [],
        "firm_response": None,
        "firm_offer_fen": None,
        "firm_terms": "",
        "firm_responded_at": None,
        "created_at": created,
        "updated_at": created,
        "submitted_at": None,
        "accepted_at": None,
        "closed_at": None,
        "firm_response_due": None,
        "close_due": None,
        "paused_at": None,
        "paused_working_days": 0,
        "filing_ip": "127.0.0.1",
        "form_key": None,
    }
    events = [_event(case_id, created, filer_id, None, "draft", "create")]
    moment, before = created, "draft"
    for target in rng.choice(PATHS[status]):
        moment = min(world.now, moment + timedelta(hours=rng.uniform(2, 96)))
        name, who = TRANSITIONS[target]
        events.append(_event(case_id, moment, actors[who], before, target, name))
        before = target
        if target == "submitted":
            year = moment.year
            world.counters[(committee_id, year)] += 1
            sequence = world.counters[(committee_id, year)]
            row["number"] = f"{world.prefixes[ci]}-{year}-{sequence:06d}"
            row["submitted_at"] = moment
        elif target == "accepted":
            simple = category in ("credit_card", "small_loan") and amount <= 5_000_000
            row["complexity"] = "simple" if simple else "complex"
            row["accepted_at"] = moment
            row["firm_response_due"] = (moment + timedelta(days=7)).date()
            row["close_due"] = (moment + timedelta(days=21 if simple else 42)).date()
            if rng.random() < 0.7:
                kind = rng.choice(["agree", "agree", "propose", "decline"])
                row["firm_response"] = kind
                row["firm_responded_at"] = moment + timedelta(days=rng.uniform(1, 9))
                if kind == "propose":
                    row["firm_offer_fen"] = amount // 2
                    row["firm_terms"] = "同意退还一半费用。"
        elif target == "assigned":
            row["mediator_id"] = mediator_id
    if status in CLOSED_STATUSES:
        row["closed_at"] = moment
    if status != "draft" and rng.random() < 0.3:
        for _ in range(rng.randint(1, 3)):
            moment = min(world.now, moment + timedelta(hours=rng.uniform(1, 48)))
            actor = rng.choice(list(actors.values()))
            message = _event(case_id, moment, actor, None, None, "")
            message.update(
                kind="message",
                body=rng.choice(MESSAGES),
                data={},
                visibility=rng.choice(["all", "claimant", "staff"]),
            )
            events.append(message)
    row["updated_at"] = moment
    return row, events


ELIGIBILITY = ("in_court", "in_arbitration", "other_mediator", "has_decision", "settled")


def _event(
    case_id: int, when: datetime, actor: int, before: str | None, after: str | None, name: str
) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "actor_id": actor,
        "kind": "transition",
        "from_status": before,
        "to_status": after,
        "body": "",
        "data": {"transition": name},
        "visibility": "all",
        "created_at": when,
    }


def _user_row(role: str, name: str, password_hash: str, now: datetime) -> dict[str, Any]:
    return {
        "role": role,
        "display_name": name,
        "phone_index": None,
        "phone_enc": None,
        "email_index": None,
        "email_enc": None,
        "password_hash": password_hash,
        "locale": "zh_CN",
        "large_text": False,
        "firm_id": None,
        "committee_id": None,
        "is_active": True,
        "created_at": now - timedelta(days=800),
        "password_changed_at": now - timedelta(days=800),
        "phone_verified_at": None,
    }


def _list_paths(rng: random.Random, counts: Counter[tuple[str, str]]) -> list[str]:
    """Filtered staff-list URLs (a status, often a category) with a page that exists."""
    statuses = ["in_mediation", "accepted", "assigned", "submitted", "closed", "settled"]
    categories = ["credit_card", "small_loan", "consumer", "insurance", ""]
    paths = []
    for _ in range(40):
        status, category = rng.choice(statuses), rng.choice(categories)
        if category:
            n = counts[(status, category)]
        else:
            n = sum(v for (s, _c), v in counts.items() if s == status)
        page = rng.randint(1, min(max(1, -(-n // 50)), 5))
        query = f"status={status}" + (f"&category={category}" if category else "")
        paths.append(f"/cases?{query}&page={page}")
    return [
        *paths,
        "/cases?due=overdue",
        "/cases?due=firm_silent&page=2",
        "/cases?complexity=simple&status=in_mediation",
        "/cases?category=credit_card&sort=-amount&page=2",
    ]


def _search_paths(rng: random.Random, numbers: list[str]) -> list[str]:
    """Search URLs: the phrases above, and case numbers (whole and partial)."""
    from urllib.parse import quote

    terms = list(SEARCH_TERMS)
    terms += rng.sample(numbers, 4)  # PT-2026-001234
    terms += [n[3:12] for n in rng.sample(numbers, 2)]  # 2026-0012
    return [f"/cases?q={quote(t)}" for t in terms]


async def _organisations(db: Any, vault: Any, password: str, login: str) -> tuple[list[Any], ...]:
    """Committees and their administrators through the real services (so login works)."""
    from portal.accounts import service as accounts
    from portal.orgs import service as orgs
    from portal.policy import Role

    committees, admins = [], []
    for i, spec in enumerate(COMMITTEES):
        committee = await orgs.create_committee(
            db,
            None,
            name=str(spec["name"]),
            name_en=str(spec["name_en"]),
            region=str(spec["region"]),
            categories=ALL_CATEGORIES,
            case_prefix=str(spec["case_prefix"]),
        )
        committees.append(committee)
        admins.append(
            await accounts.create_user(
                db,
                vault,
                role=Role.COMMITTEE_ADMIN,
                display_name=f"{SURNAMES[i]}主任",
                password=password,
                email=login if i == 0 else f"admin{i}@bench.example",
                committee_id=committee.id,
            )
        )
    return committees, admins


async def _people(
    conn: Any, rng: random.Random, vault: Any, committee_ids: list[int], password_hash: str
) -> tuple[dict[int, list[int]], list[int], dict[int, tuple[bytes, str]]]:
    """30 mediators (20 in the first committee) with profiles; 3,000 claimants with phones."""
    from sqlalchemy import insert, select

    from portal.accounts.models import User
    from portal.orgs.models import MediatorProfile

    now = datetime.now(UTC)
    users = []
    homes = [committee_ids[0]] * 20 + [committee_ids[1]] * 6 + [committee_ids[2]] * 4
    for i, committee_id in enumerate(homes):
        email = f"mediator{i}@bench.example"
        user = _user_row("mediator", f"{rng.choice(SURNAMES)}调解员", password_hash, now)
        user.update(
            email_index=vault.blind_index("email", email),
            email_enc=vault.encrypt(email, "users.email"),
            committee_id=committee_id,
        )
        users.append(user)
    phones = [f"139{i:08d}" for i in range(3000)]
    for phone in phones:
        user = _user_row("consumer", rng.choice(SURNAMES) + rng.choice(GIVEN), password_hash, now)
        user.update(
            phone_index=vault.blind_index("phone", phone),
            phone_enc=vault.encrypt(phone, "users.phone"),
            phone_verified_at=now - timedelta(days=800),
        )
        users.append(user)
    await conn.execute(insert(User.__table__), users)
    mediators: dict[int, list[int]] = {}
    query = select(User.id, User.committee_id).where(User.role == "mediator")
    for user_id, committee_id in await conn.execute(query):
        mediators.setdefault(committee_id, []).append(user_id)
    profiles = [
        {
            "user_id": user_id,
            "specialties": rng.sample(ALL_CATEGORIES, 3),
            "grade": rng.choice(["senior", "intermediate", "junior"]),
        }
        for ids in mediators.values()
        for user_id in ids
    ]
    await conn.execute(insert(MediatorProfile.__table__), profiles)
    query = select(User.id).where(User.role == "consumer").order_by(User.id)
    consumers = list(await conn.scalars(query))
    phone_of = {
        uid: (vault.encrypt(phone, "cases.claimant_phone"), vault.blind_index("phone", phone))
        for uid, phone in zip(consumers, phones, strict=True)
    }
    return mediators, consumers, phone_of


async def _firms(conn: Any, rng: random.Random) -> dict[str, list[Any]]:
    """200 firms, named like real ones, a sixth of them in each industry."""
    from sqlalchemy import insert, select

    from portal.orgs.models import Firm

    firms: dict[str, dict[str, Any]] = {}
    industries = list(FIRM_KINDS)
    while len(firms) < 200:
        industry = industries[len(firms) % len(industries)]
        name = rng.choice(CITIES) + rng.choice(FIRM_WORDS) + rng.choice(FIRM_KINDS[industry])
        firms.setdefault(
            name,
            {
                "name": name,
                "name_en": None,
                "credit_code": credit_code(1000 + len(firms)),
                "industry": industry,
                "created_at": datetime.now(UTC) - timedelta(days=900),
            },
        )
    await conn.execute(insert(Firm.__table__), list(firms.values()))
    by_industry: dict[str, list[Any]] = {}
    query = select(Firm.id, Firm.name, Firm.credit_code, Firm.industry)
    for row in await conn.execute(query):
        by_industry.setdefault(row.industry, []).append(row)
    return by_industry


def _claimants(vault: Any) -> list[tuple[bytes, str, bytes, str]]:
    """300 claimants' names and ID numbers, encrypted once each and reused."""
    out = []
    for i in range(300):
        name = SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 7) % len(GIVEN)]
        id_number = f"3101{i % 10:02d}19{60 + i % 40}{1 + i % 12:02d}{1 + i % 28:02d}{i:03d}X"
        out.append(
            (
                vault.encrypt(name, "cases.claimant_name"),
                vault.blind_index("person_name", name),
                vault.encrypt(id_number, "cases.claimant_id"),
                vault.blind_index("resident_id", id_number),
            )
        )
    return out


async def seed(settings: Any, backend: str, n_cases: int, rng: random.Random) -> SeedInfo:
    """Fill a migrated database: organisations and staff through the services, then cases and
    their timelines by bulk inserts in batches of 5,000; then ANALYZE."""
    from sqlalchemy import func, insert, select, text

    from portal.cases.models import Case, CaseCounter, CaseEvent
    from portal.crypto import DataVault
    from portal.db import create_engine, create_sessionmaker

    started = time.perf_counter()
    vault = DataVault(settings.data_key)
    engine = create_engine(settings.database_url)
    password = secrets.token_urlsafe(12)
    login = "admin@bench.example"
    pg = backend == "postgresql"
    try:
        async with create_sessionmaker(engine)() as db:
            committees, admins = await _organisations(db, vault, password, login)
        async with engine.connect() as conn:
            if not pg:
                await conn.exec_driver_sql("PRAGMA synchronous=OFF")
            committee_ids = [c.id for c in committees]
            firms = await _firms(conn, rng)
            mediators, consumers, phone_of = await _people(
                conn, rng, vault, committee_ids, admins[0].password_hash
            )
            await conn.commit()
            world = World(
                now=datetime.now(UTC),
                prefixes=[c.case_prefix for c in committees],
                committee_ids=committee_ids,
                admin_ids=[a.id for a in admins],
                mediators=mediators,
                consumers=consumers,
                consumer_phone=phone_of,
                firms=firms,
                claimants=_claimants(vault),
                agent=(
                    vault.encrypt("李律师", "cases.agent_name"),
                    vault.encrypt("13912345678", "cases.agent_phone"),
                    vault.blind_index("phone", "13912345678"),
                ),
            )
            trgm: list[Any] = []
            if pg:
                # The trigram indexes are built once after loading (as a restore does).
                trgm = list(
                    await conn.execute(
                        text(
                            "SELECT indexname, indexdef FROM pg_indexes "
                            "WHERE tablename = 'cases' AND indexname LIKE '%\\_trgm'"
                        )
                    )
                )
                for row in trgm:
                    await conn.execute(text(f'DROP INDEX "{row.indexname}"'))

            # Creation times decide ids and numbers, as in production.
            pick_status = weighted(rng, STATUS_WEIGHTS)
            pick_category = weighted(rng, CATEGORY_WEIGHTS)
            shares = [float(c["share"]) for c in COMMITTEES]
            skeletons = []
            for _ in range(n_cases):
                status = pick_status()
                days = 75 if status in RECENT else 730
                created = world.now - timedelta(seconds=rng.uniform(3600, days * 86400))
                skeletons.append((created, status, rng.choices(range(len(shares)), shares)[0]))
            skeletons.sort(key=lambda s: s[0])

            list_counts: Counter[tuple[str, str]] = Counter()
            term_matches: Counter[str] = Counter()
            admin_cases: list[int] = []
            numbers: list[str] = []
            n_events = 0
            for start in range(0, n_cases, BATCH):
                if STOP.is_set():
                    raise KeyboardInterrupt("stopped")
                case_rows, event_rows = [], []
                for offset, (created, status, ci) in enumerate(skeletons[start : start + BATCH]):
                    case_id = start + offset + 1
                    category = pick_category()
                    row, events = make_case(rng, world, case_id, created, status, ci, category)
                    case_rows.append(row)
                    event_rows += events
                    if ci == 0 and status != "draft":
                        admin_cases.append(case_id)
                        numbers.append(row["number"])
                        list_counts[(status, category)] += 1
                    haystack = row["facts"] + "\n" + row["respondent_name"]
                    term_matches.update(t for t in SEARCH_TERMS if t in haystack)
                await conn.execute(insert(Case.__table__), case_rows)
                await conn.execute(insert(CaseEvent.__table__), event_rows)
                await conn.commit()
                n_events += len(event_rows)
                done = start + len(case_rows)
                print(f"  seeded {done:,} cases, {n_events:,} events", end="\r", flush=True)
            print()
            counters = [
                {"committee_id": c, "year": y, "last": n} for (c, y), n in world.counters.items()
            ]
            await conn.execute(insert(CaseCounter.__table__), counters)
            if pg:
                await conn.execute(text("SET maintenance_work_mem = '256MB'"))
                for row in trgm:
                    await conn.execute(text(row.indexdef))
                await conn.execute(
                    text("SELECT setval(pg_get_serial_sequence('cases', 'id'), :n)"),
                    {"n": n_cases},
                )
            else:
                await _check_fts(conn, n_cases, term_matches)
            await conn.commit()
            assert await conn.scalar(select(func.count()).select_from(Case)) == n_cases
        await _analyze(engine, backend)
        size = await _database_size(engine, backend, settings)
    finally:
        await engine.dispose()
    return SeedInfo(
        admin_login=login,
        admin_password=password,
        case_ids=admin_cases,
        list_paths=_list_paths(rng, list_counts),
        search_paths=_search_paths(rng, numbers),
        cases=n_cases,
        events=n_events,
        seconds=time.perf_counter() - started,
        term_matches=dict(term_matches),
        db_size_mb=size,
    )


async def _check_fts(conn: Any, n_cases: int, term_matches: Counter[str]) -> None:
    """The triggers filled the FTS5 index: one entry per case, and phrases find their cases."""
    from sqlalchemy import text

    indexed = await conn.scalar(text("SELECT count(*) FROM cases_fts_docsize"))
    if indexed != n_cases:
        raise RuntimeError(f"cases_fts indexes {indexed} cases, expected {n_cases}")
    for term in [t for t in SEARCH_TERMS if len(t) >= 3][:5]:
        query = text("SELECT count(*) FROM cases_fts WHERE cases_fts MATCH :q")
        found = await conn.scalar(query, {"q": f'"{term}"'})
        if found != term_matches[term]:
            raise RuntimeError(
                f"cases_fts finds {found} cases for {term}, not {term_matches[term]}"
            )


async def _analyze(engine: Any, backend: str) -> None:
    if backend == "sqlite":
        async with engine.connect() as conn:
            await conn.exec_driver_sql("ANALYZE")
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            await conn.commit()
    else:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM ANALYZE")


async def _database_size(engine: Any, backend: str, settings: Any) -> float:
    if backend == "sqlite":
        path = settings.database_url.split(":///", 1)[1]
        return await asyncio.to_thread(os.path.getsize, path) / 2**20
    async with engine.connect() as conn:
        size = await conn.exec_driver_sql("SELECT pg_database_size(current_database())")
        return float(size.scalar_one()) / 2**20


# -- interruption ---------------------------------------------------------------------------

# Set by SIGINT/SIGTERM: every loop checks it, so the run stops within one request even when a
# library swallows a task's cancellation; then the ExitStacks remove servers and databases.
STOP = threading.Event()


def _interrupt(signum: int, _frame: Any) -> None:
    STOP.set()
    raise KeyboardInterrupt(f"signal {signum}")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, with SIGINT/SIGTERM setting STOP and cancelling the work."""
    if STOP.is_set():
        coro.close()
        raise KeyboardInterrupt("stopping")

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            STOP.set()
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        return await coro

    try:
        result = asyncio.run(guarded())
    except asyncio.CancelledError:
        raise KeyboardInterrupt("stopped") from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _interrupt)
    if STOP.is_set():
        raise KeyboardInterrupt("stopped")
    return result


# -- databases and servers ------------------------------------------------------------------


async def _postgres_admin(url: str, statement: str) -> None:
    from portal.db import create_engine

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _server_env(settings: Any) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "REDIS_", "SMTP_", "SESSION_", "STORAGE_"))
    }
    env.update(
        DATABASE_URL=settings.database_url,
        VAR_DIR=str(settings.var_dir),
        STORAGE_DIR=str(settings.storage_dir),
        BASE_URL=settings.base_url,
        SECRET_KEY=settings.secret_key,
        DATA_KEY=settings.data_key,
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def memory_mb(self) -> tuple[float, float]:
        """Resident set size now and at its peak, in MiB, summed over the process and its
        children (uvicorn's workers); Linux /proc."""
        rss = peak = 0.0
        for pid in _process_tree(self.process.pid):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    key, _, rest = line.partition(":")
                    if key == "VmRSS":
                        rss += int(rest.split()[0]) / 1024
                    elif key == "VmHWM":
                        peak += int(rest.split()[0]) / 1024
        return rss, peak

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _process_tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
    return found


def start_server(name: str, argv: list[str], env: dict[str, str], log: Path, port: int) -> Server:
    handle = log.open("wb")
    process = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    handle.close()
    server = Server(name, process, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) == 0:
                return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} did not answer on port {port} within 60 s")


def start_bare(script: Path, workdir: Path, stack: contextlib.ExitStack) -> Server:
    """The reference server of a benchmark: ``script --serve-bare PORT`` in its own process,
    stopped on the way out."""
    port = _free_port()
    bare = start_server(
        "bare",
        [sys.executable, str(script), "--serve-bare", str(port)],
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        workdir / "bare.log",
        port,
    )
    stack.callback(bare.stop)
    return bare


def serve_bare(port: int) -> None:
    """The reference: one Starlette route returning a small page, served like the portal."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    page = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>解纷</title></head>'
        "<body><main><h1>解纷</h1><p>bare reference page</p></main></body></html>"
    )

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    uvicorn.run(Starlette(routes=[Route("/", home)]), host=HOST, port=port, proxy_headers=True)


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Result:
    endpoint: str
    latencies: list[float]  # seconds, one per completed response
    errors: int
    wall: float
    first_error: str = ""
    queries: float | None = None
    client_cpu_ms: float = 0.0  # the load generator's own CPU per response
    by_path: dict[str, list[float]] = field(default_factory=dict)

    def slowest(self, n: int = 3) -> list[tuple[str, float]]:
        """The ``n`` paths with the highest median latency (ms): where a tail comes from."""
        medians = {
            path: sorted(values)[len(values) // 2] * 1000 for path, values in self.by_path.items()
        }
        return sorted(medians.items(), key=lambda item: -item[1])[:n]

    def percentile(self, p: float) -> float:
        values = sorted(self.latencies)
        if not values:
            return math.nan
        return values[max(0, math.ceil(p / 100 * len(values)) - 1)] * 1000

    @property
    def mean(self) -> float:
        return sum(self.latencies) / len(self.latencies) * 1000 if self.latencies else math.nan

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0


async def load(
    client: Any, paths: list[str], count: int, concurrency: int, marker: bytes, seconds: float
) -> Result:
    """``count`` GETs over ``paths`` by ``concurrency`` workers, stopping at ``seconds``."""
    latencies: list[float] = []
    by_path: dict[str, list[float]] = {}
    errors = 0
    first_error = ""
    cursor = iter(range(count))
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal errors, first_error
        for i in cursor:
            if STOP.is_set() or time.monotonic() > deadline:
                return
            path = paths[i % len(paths)]
            started = time.perf_counter()
            try:
                status, body = await client(path)
            except Exception as exc:
                errors += 1
                first_error = first_error or f"{path}: {exc!r}"
                continue
            latencies.append(time.perf_counter() - started)
            by_path.setdefault(path, []).append(latencies[-1])
            if status != 200 or marker not in body:
                errors += 1
                first_error = first_error or f"{path}: HTTP {status}"

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    result = Result("", latencies, errors, wall, first_error, by_path=by_path)
    result.client_cpu_ms = cpu / max(1, len(latencies)) * 1000
    return result


async def login(base_url: str, login_name: str, password: str) -> Any:
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        page = await client.get("/")
        found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
        if found is None:
            raise RuntimeError("no CSRF token on the home page")
        response = await client.post(
            "/accounts/login",
            data={"login": login_name, "password": password, "csrf_token": found.group(1)},
        )
        if response.status_code not in (302, 303) or "jiefen_session" not in client.cookies:
            raise RuntimeError(f"login failed: HTTP {response.status_code}")
        return client.cookies


async def measure_all(
    plan: list[tuple[str, str, list[str], bytes, Any]], args: argparse.Namespace
) -> dict[str, Result]:
    """Measure each (endpoint, base url, paths, marker, cookies) in turn: warm-up, then timed.

    The load comes from aiohttp, which spends about a third of httpx's CPU per response; client
    and server share the machine's cores, so a lighter client leaves more to the server."""
    import aiohttp

    results = {}
    for endpoint, base_url, paths, marker, cookies in plan:
        headers = {}
        if cookies is not None:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(
            base_url=base_url,
            headers=headers,
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as session:

            async def fetch(path: str, session: Any = session) -> tuple[int, bytes]:
                async with session.get(path, allow_redirects=False) as response:
                    return response.status, await response.read()

            warm = max(args.concurrency * 4, args.requests // 10)
            await load(fetch, paths, warm, args.concurrency, marker, min(30, args.max_seconds))
            result = await load(
                fetch, paths, args.requests, args.concurrency, marker, args.max_seconds
            )
        result.endpoint = endpoint
        results[endpoint] = result
        print(
            f"  {endpoint:<7} p50 {result.percentile(50):7.1f} ms  p99 {result.percentile(99):7.1f}"
            f" ms  {result.rate:7.1f} req/s  errors {result.errors}"
            f"  (client CPU {result.client_cpu_ms:.2f} ms/req)",
            flush=True,
        )
        if endpoint != "bare":
            print(
                "          slowest (median): "
                + ", ".join(f"{path} {ms:.0f} ms" for path, ms in result.slowest()),
                flush=True,
            )
    return results


async def count_queries(settings: Any, cookies: Any, paths: dict[str, str]) -> dict[str, float]:
    """SQL statements each page runs, in-process (the outbox's polling is left out)."""
    try:
        import httpx
        from asgi_lifespan import LifespanManager
    except ImportError:
        return {}
    from sqlalchemy import event

    from portal.app import create_app

    app = create_app(settings)
    seen: list[str] = []
    counted: dict[str, float] = {}
    async with LifespanManager(app) as manager:
        engine = app.starlette.state.engine

        def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if "notifications" not in statement:
                seen.append(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", before)
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url=settings.base_url, cookies=cookies
        ) as client:
            for endpoint, path_list in paths.items():
                total = 0
                sample = path_list[:5]
                for path in sample:
                    seen.clear()
                    response = await client.get(path)
                    response.raise_for_status()
                    total += len(seen)
                counted[endpoint] = total / len(sample)
        event.remove(engine.sync_engine, "before_cursor_execute", before)
    return counted


# -- one backend ----------------------------------------------------------------------------


@dataclass
class BackendRun:
    backend: str
    seed: SeedInfo
    results: dict[str, Result]
    rss_mb: float
    peak_mb: float
    version: str


def fresh_database(
    backend: str,
    postgres_url: str,
    var_dir: Path,
    stack: contextlib.ExitStack,
    prefix: str = "jiefen_bench",
) -> str:
    """A fresh database's URL: a SQLite file in ``var_dir``, or a new PostgreSQL database,
    dropped on the way out whatever happens (plain asyncio.run: it must run while stopping)."""
    from sqlalchemy.engine import make_url

    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{var_dir / 'jiefen.db'}"
    admin_url = make_url(postgres_url)
    if admin_url.host not in (HOST, "localhost"):
        raise SystemExit("--postgres-url must point at 127.0.0.1")
    name = f"{prefix}_{secrets.token_hex(4)}"
    stack.callback(
        lambda: asyncio.run(
            _postgres_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )
    )
    run_async(_postgres_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    return admin_url.set(database=name).render_as_string(hide_password=False)


def run_backend(
    backend: str, args: argparse.Namespace, workdir: Path, bare: Server, stack: contextlib.ExitStack
) -> BackendRun:

    from portal.cli import upgrade_database
    from portal.settings import Settings

    print(f"\n== {backend}: {args.cases:,} cases", flush=True)
    port = _free_port()
    var_dir = workdir / backend
    url = fresh_database(backend, args.postgres_url, var_dir, stack)
    settings = Settings(
        database_url=url,
        secret_key=secrets.token_urlsafe(32),
        data_key=secrets.token_urlsafe(32),
        var_dir=var_dir,
        storage_dir=var_dir / "storage",
        base_url=f"http://{HOST}:{port}",
    )
    upgrade_database(settings)
    rng = random.Random(args.seed)
    info = run_async(seed(settings, backend, args.cases, rng))
    print(
        f"  seeded in {info.seconds:.0f} s: {info.cases:,} cases, {info.events:,} events,"
        f" {info.db_size_mb:.0f} MiB",
        flush=True,
    )
    version = run_async(_version(settings))

    server = start_server(
        "jiefen",
        [
            str(ROOT / ".venv" / "bin" / "jiefen"),
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(args.workers),
        ],
        _server_env(settings),
        var_dir / "server.log",
        port,
    )
    stack.callback(server.stop)
    cookies = run_async(login(server.url, info.admin_login, info.admin_password))
    case_paths = [f"/cases/{i}" for i in rng.sample(info.case_ids, min(len(info.case_ids), 4000))]
    plan = [
        ("bare", bare.url, ["/"], b"bare reference page", None),
        ("list", server.url, info.list_paths, b'data-testid="case-count"', cookies),
        ("case", server.url, case_paths, b"<h1", cookies),
        ("search", server.url, info.search_paths, b'data-testid="case-count"', cookies),
    ]
    results = run_async(measure_all(plan, args))
    rss, peak = server.memory_mb()
    server.stop()
    queries = run_async(
        count_queries(
            settings,
            cookies,
            {"list": info.list_paths, "case": case_paths, "search": info.search_paths},
        )
    )
    for endpoint, value in queries.items():
        results[endpoint].queries = value
    return BackendRun(backend, info, results, rss, peak, version)


async def _version(settings: Any) -> str:
    from portal.db import create_engine

    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            if settings.is_sqlite:
                value = await conn.exec_driver_sql("SELECT sqlite_version()")
                return f"SQLite {value.scalar_one()}"
            value = await conn.exec_driver_sql("SHOW server_version")
            return f"PostgreSQL {value.scalar_one().split()[0]}"
    finally:
        await engine.dispose()


# -- reporting ------------------------------------------------------------------------------


def _mark(endpoint: str, result: Result) -> str:
    target = TARGETS_MS.get(endpoint)
    if target is None:
        return "reference"
    ok = result.percentile(99) <= target and result.errors == 0
    return f"≤ {target:.0f} {'✓' if ok else '✗'}"


def rows(runs: list[BackendRun]) -> list[list[str]]:
    table = []
    for run in runs:
        for endpoint, label in ENDPOINTS:
            r = run.results[endpoint]
            table.append(
                [
                    run.backend,
                    label,
                    f"{len(r.latencies)}",
                    f"{r.percentile(50):.1f}",
                    f"{r.percentile(99):.1f}",
                    f"{r.mean:.1f}",
                    f"{r.rate:.0f}",
                    f"{r.errors}",
                    "-" if r.queries is None else f"{r.queries:.0f}",
                    _mark(endpoint, r),
                ]
            )
    return table


HEADER = [
    "backend",
    "endpoint",
    "requests",
    "p50 ms",
    "p99 ms",
    "mean ms",
    "req/s",
    "errors",
    "SQL/req",
    "p99 target ms",
]


def text_table(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *table]) for i in range(len(HEADER))]
    numeric = {2, 3, 4, 5, 6, 7, 8}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(HEADER), line(["-" * w for w in widths])]
    return "\n".join(out + [line(r) for r in table])


def markdown_table(table: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADER) + " |"]
    out.append("| " + " | ".join("---" if i < 2 else "---:" for i in range(len(HEADER))) + " |")
    out += ["| " + " | ".join(r) + " |" for r in table]
    return "\n".join(out)


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    cpu = model or platform.machine()
    return f"{os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}"


START = "<!-- bench/cases.py: results start -->"
END = "<!-- bench/cases.py: results end -->"
INTRO = """# Benchmarks

Each script in `bench/` measures what its issue asks for and prints a table beside a reference
measured in the same run (a bare Starlette page served by uvicorn in its own process), so the
figures can be read against what the machine and the HTTP stack cost by themselves. This page
keeps the latest results of each benchmark with their date; a script replaces only its own
section. Benchmarks are not part of `make test`.

Machine: the 2-core development machine the targets are set for, unless a section says otherwise.
Client and server share those 2 cores.
"""
SECTION = """
## Cases: staff list, case page, search (`bench/cases.py`)

Seeds a fresh database (SQLite file; new PostgreSQL database) with 100,000 cases over three
committees (70 % in the administrator's), 200 firms, 30 mediators and 3,000 claimants, each case
with its timeline and 50-500 characters of Chinese facts, then measures over HTTP, against
`jiefen serve` in its own process and logged in as a committee administrator, with 16 concurrent
clients: the staff list filtered by status and category (50 per page, pages 1-5), a case page
(timeline, materials, parties) and a full-text search (`q=` a 2-6 character phrase, a firm name
or a case number). Targets (p99): list and case page ≤ 100 ms, search ≤ 200 ms.

```sh
.venv/bin/python bench/cases.py            # both backends; --backend, --cases, --requests
```

{start}
{end}
"""


def write_docs(runs: list[BackendRun], args: argparse.Namespace, elapsed: float) -> None:
    table = rows(runs)
    now = datetime.now().astimezone()
    lines = [
        START,
        f"Latest run: {now:%Y-%m-%d %H:%M %Z}, {machine()}; "
        + ", ".join(r.version for r in runs)
        + f"; {args.cases:,} cases, {args.requests:,} requests per endpoint after a warm-up,"
        f" {args.concurrency} concurrent clients, `jiefen serve --workers {args.workers}`;"
        f" the whole run took {elapsed / 60:.0f} min.",
        "",
        markdown_table(table),
        "",
    ]
    for run in runs:
        matches = [run.seed.term_matches.get(t, 0) for t in SEARCH_TERMS]
        lines.append(
            f"- {run.backend}: server RSS {run.rss_mb:.0f} MiB after the run (peak"
            f" {run.peak_mb:.0f} MiB); database {run.seed.db_size_mb:.0f} MiB with"
            f" {run.seed.events:,} timeline events, seeded in {run.seed.seconds:.0f} s;"
            f" search phrases match {min(matches):,}-{max(matches):,} cases"
            f" (median {sorted(matches)[len(matches) // 2]:,})."
        )
        for endpoint in ("list", "search"):
            slow = run.results[endpoint].slowest()
            if slow:
                lines.append(
                    f"  - {endpoint}, slowest paths by median: "
                    + ", ".join(f"`{path}` {ms:.0f} ms" for path, ms in slow)
                )
    client = max(r.results["bare"].client_cpu_ms for r in runs)
    lines += [
        "",
        "SQL/req: statements one request runs (counted in-process; the outbox worker's own "
        "polling is not counted). With a closed loop of 16 clients, latency is about 16 "
        "times the server's time per request, so these targets need a few milliseconds per "
        f"page. The client itself used up to {client:.1f} ms CPU per response on the bare "
        "page: that, not the server, bounds the reference.",
    ]
    short = [
        f"{run.backend} {label} ({len(run.results[e].latencies):,})"
        for run in runs
        for e, label in ENDPOINTS
        if len(run.results[e].latencies) < args.requests
    ]
    if short:
        lines.append(
            f"Stopped at --max-seconds ({args.max_seconds:.0f} s) before {args.requests:,} "
            "requests: " + ", ".join(short) + "."
        )
    if CHART.exists():
        lines += ["", f"![p50 and p99 per endpoint]({CHART.name})"]
    lines.append(END)
    block = "\n".join(lines)
    update_docs(block, START, END, SECTION.format(start=block, end=""))


def update_docs(block: str, start: str, end: str, section: str) -> None:
    """Put a benchmark's results ``block`` (from its ``start`` marker to its ``end`` marker)
    in docs/benchmarks.md in place of its previous results, or add its ``section`` (the block
    with its heading and reading) at the end the first time."""
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else INTRO
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n" + section.rstrip() + "\n"
    DOCS.write_text(text, encoding="utf-8")


def write_chart(runs: list[BackendRun]) -> None:
    """Horizontal bars on a log scale: p99 (light) and p50 (dark) per endpoint and backend,
    with the p99 targets as red ticks."""
    bar, gap, left, width = 16, 10, 230, 560
    entries = [(run, e, label) for run in runs for e, label in ENDPOINTS]
    low = 1.0
    high = 10 ** math.ceil(math.log10(max(r.results[e].percentile(99) for r, e, _ in entries)))
    high = max(high, 1000.0)

    def x(ms: float) -> float:
        ms = min(max(ms, low), high)
        return left + width * math.log10(ms / low) / math.log10(high / low)

    height = 70 + len(entries) * (bar + gap) + 20
    today = datetime.now().astimezone().strftime("%Y-%m-%d")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" height="{height}"'
        ' font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">bench/cases.py, {today}:'
        " latency in ms (log scale)</text>",
        '<text x="10" y="38" fill="#555">dark: p50, light: p99, red tick: the p99 target;'
        " blue: SQLite, green: PostgreSQL</text>",
    ]
    bottom = 60 + len(entries) * (bar + gap)
    tick = low
    while tick <= high:
        out.append(
            f'<line x1="{x(tick):.1f}" y1="52" x2="{x(tick):.1f}" y2="{bottom}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{x(tick):.1f}" y="{bottom + 14}" text-anchor="middle"'
            f' fill="#555">{tick:g}</text>'
        )
        tick *= 10
    y = 58
    for run, endpoint, label in entries:
        r = run.results[endpoint]
        p50, p99 = r.percentile(50), r.percentile(99)
        dark, light = ("#4c78a8", "#9ecae9") if run.backend == "sqlite" else ("#54a24b", "#b3e2a8")
        out += [
            f'<text x="10" y="{y + 12}">{html.escape(run.backend)}: {html.escape(label)}</text>',
            f'<rect x="{left}" y="{y}" width="{x(p99) - left:.1f}" height="{bar}"'
            f' fill="{light}"><title>p99 {p99:.1f} ms</title></rect>',
            f'<rect x="{left}" y="{y + 4}" width="{x(p50) - left:.1f}" height="{bar - 8}"'
            f' fill="{dark}"><title>p50 {p50:.1f} ms</title></rect>',
        ]
        target = TARGETS_MS.get(endpoint)
        if target is not None:
            out.append(
                f'<line x1="{x(target):.1f}" y1="{y - 2}" x2="{x(target):.1f}" y2="{y + bar + 2}"'
                ' stroke="#d62728" stroke-width="2"/>'
            )
        y += bar + gap
    out.append("</svg>")
    CHART.write_text("\n".join(out) + "\n", encoding="utf-8")


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000, help="per measured endpoint")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="jiefen serve --workers")
    parser.add_argument("--max-seconds", type=float, default=180, help="per endpoint, at most")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL),
        help="a database on the loopback server to connect to while creating the bench one",
    )
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    started = time.monotonic()
    runs: list[BackendRun] = []
    workdir = Path(tempfile.mkdtemp(prefix="jiefen-bench-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        bare = start_bare(Path(__file__).resolve(), workdir, stack)
        for backend in backends:
            with contextlib.ExitStack() as inner:
                runs.append(run_backend(backend, args, workdir, bare, inner))
    elapsed = time.monotonic() - started
    table = rows(runs)
    print()
    print(
        f"Cases benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: {args.cases:,} cases,"
        f" {args.requests:,} requests per endpoint, {args.concurrency} concurrent clients"
    )
    print(text_table(table))
    for run in runs:
        print(
            f"{run.backend}: server RSS {run.rss_mb:.0f} MiB (peak {run.peak_mb:.0f} MiB),"
            f" {run.version}, database {run.seed.db_size_mb:.0f} MiB"
        )
        for endpoint, result in run.results.items():
            if result.first_error:
                print(f"  first error on {endpoint}: {result.first_error}")
    print(f"whole run: {elapsed / 60:.1f} min")
    if not args.no_docs:
        write_chart(runs)
        write_docs(runs, args, elapsed)
        print(f"wrote {DOCS.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; servers, databases and temporary files removed", file=sys.stderr)
        sys.exit(130)
