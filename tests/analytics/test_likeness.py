"""Template-complaint detection: the decision rule on a labelled set, and the index with the
database (filing, rebuild and backfill, several processes, the loop, exact matches)."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from portal.accounts.models import User
from portal.analytics import likeness
from portal.analytics.likeness import LikenessIndex, values_of
from portal.analytics.likeness_models import CaseFingerprint, LikenessPair
from portal.cases import service as cases
from portal.cases.models import Case
from portal.db import utcnow
from portal.policy import Identity, Role
from portal.validators import resident_id_check_character
from tests.analytics.test_likeness_corpus import TEMPLATES, _details, _variant, corpus, independent
from tests.factories import (
    PDF,
    Person,
    make_committee,
    make_draft,
    make_firm,
    make_user,
    verify_phone,
)

# -- the decision rule on the labelled set ------------------------------------------------------


def detect(seed: int) -> tuple[float, float, int, int]:
    """Precision and recall over pairs of the labelled set, each filing checked against those
    filed before it, as at filing: the index's own decision (LSH candidates, then the cut-off)."""
    data = corpus(seed)
    index = LikenessIndex()
    found: set[tuple[int, int]] = set()
    for filing in data.filings:
        values = values_of(filing.text)
        for match in index.similar(values):
            found.add((min(filing.key, match.case_id), max(filing.key, match.case_id)))
        index.add(filing.key, 1, values)
    truth = data.pairs()
    hits = len(found & truth)
    return hits / len(found), hits / len(truth), len(truth), len(data.filings)


@pytest.mark.parametrize("seed", [20261203, 11, 2026])
def test_template_filings_are_told_from_independent_ones(seed: int) -> None:
    precision, recall, pairs, filings = detect(seed)
    print(f"seed {seed}: {filings} filings, {pairs} alike pairs: P={precision:.3f} R={recall:.3f}")
    assert precision >= 0.95
    assert recall >= 0.95


def test_edits_at_the_top_of_the_range_are_still_found() -> None:
    """Every filing of one template 13-15% away from the agent's copy (up to ~30% from each
    other), against the independent complaints on its topic."""
    import random

    rng = random.Random(5)
    topic, sentences = "small_loan", TEMPLATES["small_loan"][0]
    copy = _details(rng, topic)
    index = LikenessIndex()
    variants = [_variant(rng, topic, sentences, copy, 0.13, 0.15)[0] for _ in range(12)]
    for key, text in enumerate(variants, start=1):
        index.add(key, 1, values_of(text))
    for key in range(100, 300):
        index.add(key, 1, values_of(independent(rng, topic)))
    found = {m.case_id for m in index.similar(values_of(variants[0]), exclude=1)}
    assert len(found & set(range(2, 13))) >= 10
    assert not found - set(range(2, 13))


def test_empty_facts_are_never_alike() -> None:
    index = LikenessIndex()
    index.add(1, 1, values_of(""))
    index.add(2, 1, values_of("。。。 ！"))
    assert len(index) == 0 and 1 in index and 2 in index
    assert index.similar(values_of("")) == []


def test_committee_scope_and_order() -> None:
    import random

    details = _details(random.Random(1), "insurance")
    text = "".join(s.format(**details) for s in TEMPLATES["insurance"][0])
    index = LikenessIndex()
    index.add(10, 1, values_of(text))
    index.add(11, 2, values_of(text + "我实在没有办法了才来申请调解。"))
    index.add(12, 1, values_of(text.replace("保险公司", "该保险公司", 1)))
    everywhere = index.similar(values_of(text), exclude=10)
    assert [m.case_id for m in everywhere] == [12, 11]
    assert everywhere[0].similarity >= everywhere[1].similarity
    assert [m.case_id for m in index.similar(values_of(text), exclude=10, committee_id=2)] == [11]


def test_copied_passages_are_marked() -> None:
    runs = likeness.passages("本人张三，要求退还手续费。我很生气", "李四要求退还手续费！")
    assert runs == [("本人张三，", False), ("要求退还手续费", True), ("。我很生气", False)]
    assert "".join(run for run, _ in runs) == "本人张三，要求退还手续费。我很生气"


# -- with the database ----------------------------------------------------------------------------

_ids = iter(range(1, 10**6))


def resident_id() -> str:
    first17 = f"110105{1950 + next(_ids) % 50}0101{next(_ids) % 1000:03d}"
    return first17 + resident_id_check_character(first17)


async def claimant(app: Any) -> Person:
    person = await make_user(app, Role.CONSUMER, phone=f"139{secrets.randbelow(10**8):08d}")
    await verify_phone(app, person)
    return person


async def file(
    app: Any,
    person: Person,
    facts: str,
    *,
    index: LikenessIndex | None = None,
    firm: Any = None,
    category: str = "credit_card",
    agent: tuple[str, str] | None = None,
    id_number: str | None = None,
) -> Case:
    """A draft by ``person``, then submitted through cases.service.submit_case with ``index``.
    ``agent``: filed by an agent (phone, organisation) with a power of attorney."""
    state = app.starlette.state
    draft = await make_draft(
        app, person, firm, facts=facts, category=category, id_number=id_number or resident_id()
    )
    async with state.db() as db:
        user = await db.get(User, person.id)
        case = await db.get(Case, draft.id)
        assert user is not None and case is not None
        if agent is not None:
            await cases.save_claimant(
                db,
                state.vault,
                case,
                user,
                filed_as="agent",
                name="王五",
                id_number=id_number or resident_id(),
                agent_name="赵代理",
                agent_phone=agent[0],
                agent_org=agent[1],
            )
            blob = state.blobs.put_bytes(PDF + secrets.token_bytes(8))
            await cases.add_material(
                db,
                case,
                user,
                kind="power_of_attorney",
                filename="poa.pdf",
                content_type="application/pdf",
                size=blob.size,
                sha256=blob.sha256,
            )
        return await cases.submit_case(db, state.vault, case, user, index)


async def rows(app: Any, model: Any) -> list[Any]:
    async with app.starlette.state.db() as db:
        return list(await db.scalars(select(model)))


def template_texts(n: int, seed: int = 3, topic: str = "credit_card", number: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    copy = _details(rng, topic)
    return [_variant(rng, topic, TEMPLATES[topic][number], copy, 0.05, 0.15)[0] for _ in range(n)]


def independent_texts(n: int, seed: int = 4, topic: str = "credit_card") -> list[str]:
    import random

    rng = random.Random(seed)
    return [independent(rng, topic) for _ in range(n)]


async def test_a_filing_stores_its_fingerprint_and_alike_pairs_and_is_never_refused(
    app: Any,
) -> None:
    await make_committee(app)
    index = LikenessIndex(app.starlette.state.db)
    await index.rebuild()
    templated = template_texts(3)
    first = await file(app, await claimant(app), templated[0], index=index)
    other = await file(app, await claimant(app), independent_texts(1)[0], index=index)
    second = await file(app, await claimant(app), templated[1], index=index)
    third = await file(app, await claimant(app), templated[2], index=index)
    # Every filing went through, alike or not.
    assert {c.status for c in (first, other, second, third)} == {"submitted"}
    prints = {p.case_id: p for p in await rows(app, CaseFingerprint)}
    assert set(prints) == {first.id, other.id, second.id, third.id}
    assert all(p.compared for p in prints.values())
    assert prints[first.id].minhash == bytes(values_of(templated[0]).astype("<u4").tobytes())
    pairs = {(p.case_id, p.other_id) for p in await rows(app, LikenessPair)}
    assert pairs == {(first.id, second.id), (first.id, third.id), (second.id, third.id)}
    assert all(0.35 <= p.similarity <= 1 for p in await rows(app, LikenessPair))


async def test_the_check_is_part_of_the_filing_transaction(app: Any) -> None:
    """Rolled back with the filing: no fingerprint, no pair, and the index never saw it."""
    await make_committee(app)
    state = app.starlette.state
    index = LikenessIndex(state.db)
    await index.rebuild()
    text = template_texts(1)[0]
    kept = await file(app, await claimant(app), text, index=index)
    draft = await make_draft(app, await claimant(app), None, facts=text, id_number=resident_id())
    async with state.db() as db:
        case = await db.get(Case, draft.id)
        assert case is not None
        case.submitted_at = utcnow()
        check = await likeness.check_filing(db, index, case)
        assert [m.case_id for m in check.matches] == [kept.id]
        await db.rollback()
    assert {p.case_id for p in await rows(app, CaseFingerprint)} == {kept.id}
    assert await rows(app, LikenessPair) == []
    async with state.db() as db:
        await index.sync(db)
    assert draft.id not in index and kept.id in index


async def test_cases_filed_before_the_feature_are_fingerprinted_at_rebuild(app: Any) -> None:
    await make_committee(app)
    texts = template_texts(3) + independent_texts(2)
    filed = [await file(app, await claimant(app), t) for t in texts]  # no index: not compared
    assert not any(p.compared for p in await rows(app, CaseFingerprint))
    draft = await make_draft(
        app, await claimant(app), None, facts=texts[0], id_number=resident_id()
    )
    async with app.starlette.state.db() as db:
        await db.execute(delete(CaseFingerprint))  # as before this table existed
        await db.commit()
    index = LikenessIndex(app.starlette.state.db)
    await index.rebuild()
    prints = {p.case_id: p for p in await rows(app, CaseFingerprint)}
    assert set(prints) == {c.id for c in filed}  # the draft has none: it was never filed
    assert draft.id not in prints
    assert index.ready and len(index) == 5 and index.pending == 5
    while await index.run_once():
        pass
    assert all(p.compared for p in await rows(app, CaseFingerprint))
    pairs = {(p.case_id, p.other_id) for p in await rows(app, LikenessPair)}
    a, b, c = (x.id for x in filed[:3])
    assert pairs == {(a, b), (a, c), (b, c)}
    # A second rebuild (another process starting) changes nothing.
    again = LikenessIndex(app.starlette.state.db)
    await again.rebuild()
    while await again.run_once():
        pass
    assert len(await rows(app, LikenessPair)) == 3 and len(again) == 5


async def test_processes_see_each_others_filings(app: Any) -> None:
    """Two processes, two indexes, one database: each check first reads what the other wrote."""
    await make_committee(app, categories=["insurance"])
    state = app.starlette.state
    one, two = LikenessIndex(state.db), LikenessIndex(state.db)
    await one.rebuild()
    await two.rebuild()
    texts = template_texts(2, seed=8, topic="insurance")
    first = await file(app, await claimant(app), texts[0], index=one, category="insurance")
    assert first.id not in two
    second = await file(app, await claimant(app), texts[1], index=two, category="insurance")
    assert first.id in two
    assert {(p.case_id, p.other_id) for p in await rows(app, LikenessPair)} == {
        (first.id, second.id)
    }
    async with state.db() as db:
        assert await one.sync(db) == 2  # its own filing (once committed) and the other's
        assert await one.sync(db) == 0
    assert second.id in one


async def test_a_row_committed_late_is_read_by_the_rescan(app: Any) -> None:
    """A row written (created_at) before the newest one seen, committed after that was read:
    missed by the quick read, found by the re-read of the last WINDOW."""
    await make_committee(app)
    state = app.starlette.state
    index = LikenessIndex(state.db)
    await index.rebuild()
    first = await file(app, await claimant(app), independent_texts(1, seed=40)[0], index=index)
    async with state.db() as db:
        assert await index.sync(db, rescan=False) == 1 and first.id in index
    late = await file(app, await claimant(app), independent_texts(1, seed=41)[0])
    async with state.db() as db:
        row = await db.get(CaseFingerprint, late.id)
        assert row is not None
        row.created_at = index._high_water - timedelta(minutes=1)  # type: ignore[operator]
        await db.commit()
        assert await index.sync(db, rescan=False) == 0 and late.id not in index
        assert await index.sync(db, rescan=True) == 1 and late.id in index
        assert index.pending == 1  # filed without an index: the loop compares it


async def test_the_loop_builds_the_index_and_compares_what_was_not(app: Any) -> None:
    await make_committee(app)
    texts = template_texts(2, seed=9)
    before = await file(app, await claimant(app), texts[0])
    index = LikenessIndex(app.starlette.state.db, interval=0.05)
    index.start()
    try:
        async with asyncio.timeout(20):
            await index.wait_ready()
        after = await file(app, await claimant(app), texts[1])  # e.g. the command line: no index
        index.wake()
        for _ in range(400):
            if await rows(app, LikenessPair) and not index.pending:
                break
            await asyncio.sleep(0.05)
    finally:
        await index.stop()
    assert {(p.case_id, p.other_id) for p in await rows(app, LikenessPair)} == {
        (before.id, after.id)
    }
    assert all(p.compared for p in await rows(app, CaseFingerprint))


async def test_summary_counts_claimants_and_exact_matches_in_scope(app: Any) -> None:
    committee = await make_committee(app, categories=["credit_card"])
    other_committee = await make_committee(app, categories=["insurance"])
    firm = await make_firm(app)
    state = app.starlette.state
    index = LikenessIndex(state.db)
    await index.rebuild()
    texts = template_texts(5, seed=12)
    agent = ("13811112222", "维权互助服务中心")
    one, two = await claimant(app), await claimant(app)
    same_id = resident_id()
    case = await file(app, one, texts[0], index=index, firm=firm, agent=agent)
    by_agent = await file(app, two, texts[1], index=index, firm=firm, agent=agent)
    await file(app, two, texts[2], index=index, firm=firm, id_number=same_id)
    await file(app, await claimant(app), texts[3], index=index, firm=firm, id_number=same_id)
    # The same template and agent in another committee (insurance is routed there).
    elsewhere = await file(
        app, await claimant(app), texts[4], index=index, category="insurance", agent=agent
    )
    await file(app, one, independent_texts(1, seed=13)[0], index=index, firm=firm)
    assert case.committee_id == committee.id and elsewhere.committee_id == other_committee.id
    admin = Identity(user_id=1, role=Role.COMMITTEE_ADMIN, committee_id=committee.id)
    platform = Identity(user_id=2, role=Role.PLATFORM_ADMIN)
    async with state.db() as db:
        loaded = await db.get(Case, case.id)
        assert loaded is not None
        mine = await likeness.case_summary(db, index, loaded, admin)
        everyone = await likeness.case_summary(db, index, loaded, platform)
        compared = await likeness.compare(db, index, loaded, platform)
    # Three alike filings in the committee, by two claimants (one ID number filed twice).
    assert (mine.filings, mine.claimants) == (3, 2)
    assert (everyone.filings, everyone.claimants) == (4, 3)
    assert mine.shared == likeness.Shared(agent_phone=1, agent_org=1, filing_ip=4)
    assert everyone.shared == likeness.Shared(agent_phone=2, agent_org=2, filing_ip=5)
    near = {n.case.id: n for n in compared.nearest}
    assert set(near) == {m.case_id for m in everyone.matches}
    assert near[elsewhere.id].same_agent_phone and near[elsewhere.id].same_agent_org
    assert near[by_agent.id].same_agent_phone and near[by_agent.id].same_filing_ip is not False
    assert {c.id for c in compared.same_agent} == {elsewhere.id, by_agent.id}


async def test_clusters_group_alike_filings_by_week_and_scope(app: Any) -> None:
    committee = await make_committee(app, categories=["credit_card"])
    await make_committee(app, categories=["insurance"])
    state = app.starlette.state
    index = LikenessIndex(state.db)
    await index.rebuild()
    big = template_texts(4, seed=21, number=1)
    small = template_texts(2, seed=22, number=2)
    insured = template_texts(3, seed=23, topic="insurance", number=1)
    filed = [await file(app, await claimant(app), t, index=index) for t in big + small]
    for t in insured:
        await file(app, await claimant(app), t, index=index, category="insurance")
    for t in independent_texts(3, seed=24):
        await file(app, await claimant(app), t, index=index)
    today = cases.today_in_china()
    period = likeness.ClusterFilters(since=today, until=today, min_size=2)
    admin = Identity(user_id=1, role=Role.COMMITTEE_ADMIN, committee_id=committee.id)
    platform = Identity(user_id=2, role=Role.PLATFORM_ADMIN)
    async with state.db() as db:
        mine = await likeness.clusters(db, admin, period)
        everyone = await likeness.clusters(db, platform, period)
        bigger = await likeness.clusters(
            db, platform, likeness.ClusterFilters(since=today, until=today, min_size=3)
        )
        earlier = await likeness.clusters(
            db,
            platform,
            likeness.ClusterFilters(
                since=today.replace(year=today.year - 1),
                until=today.replace(year=today.year - 1),
                min_size=2,
            ),
        )
    assert [c.size for c in mine.clusters] == [4, 2]
    assert {c.id for c in mine.clusters[0].cases} == {c.id for c in filed[:4]}
    assert mine.clusters[0].claimants == 4 and mine.clusters[0].firms == [("未登记公司", 4)]
    assert mine.clusters[0].weeks == [
        (f"{today.isocalendar()[0]}-W{today.isocalendar()[1]:02d}", 4)
    ]
    assert [c.size for c in everyone.clusters] == [4, 3, 2]
    assert [c.size for c in bigger.clusters] == [4, 3] and bigger.total == 2
    assert earlier.clusters == [] and not earlier.truncated


def test_weeks_run_from_the_first_filing_to_the_last() -> None:
    from datetime import UTC, datetime

    moments = [
        datetime(2026, 11, 30, 2, tzinfo=UTC),  # Monday in China, week 49
        datetime(2026, 11, 29, 17, tzinfo=UTC),  # Monday 01:00 in China, week 49
        datetime(2026, 12, 20, 3, tzinfo=UTC),  # Sunday, week 51
    ]
    assert likeness._weeks(moments) == [("2026-W49", 2), ("2026-W50", 0), ("2026-W51", 1)]


def test_union_find_groups() -> None:
    groups = sorted(sorted(g) for g in likeness._components([(1, 2), (3, 4), (2, 5), (6, 6)]))
    assert groups == [[1, 2, 5], [3, 4], [6]]


async def test_counting_in_one_query(app: Any) -> None:
    """The exact-match counts are one statement (three indexed counts)."""
    await make_committee(app)
    case = await file(app, await claimant(app), "信用卡分期手续费未告知，要求退还。")
    from sqlalchemy import event

    # Only this session's connection counts: the portal's background loops (audit digests,
    # roll-ups) may use the engine at the same moment.
    statements: list[tuple[Any, str]] = []
    engine = app.starlette.state.engine.sync_engine

    def seen(*args: Any) -> None:
        statements.append((args[0], args[2]))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        async with app.starlette.state.db() as db:
            loaded = await db.get(Case, case.id)
            mine = (await db.connection()).sync_connection
            statements.clear()
            assert loaded is not None
            await likeness.shared_agents(db, loaded, None)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len([sql for conn, sql in statements if conn is mine]) == 1
    async with app.starlette.state.db() as db:
        assert await db.scalar(select(func.count()).select_from(CaseFingerprint)) == 1
