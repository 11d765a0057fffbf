"""How often one API token may call: a fixed window per token (the ``limits`` library), kept in
Redis when the portal has it, so that every process counts the same calls, else in memory."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from redis.asyncio import ConnectionPool

from portal.settings import Settings


class RateLimit:
    def __init__(self, settings: Settings) -> None:
        self.item: RateLimitItem = parse(settings.api_rate_limit)
        self.storage: Storage
        self._pool: ConnectionPool | None = None
        if settings.redis_url:
            # Our own pool, so that closing the portal closes its connections.
            self._pool = ConnectionPool.from_url(settings.redis_url)
            self.storage = RedisStorage(
                f"async+{settings.redis_url}",
                implementation="redispy",
                key_prefix=f"{settings.redis_prefix}:api-rate",
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
        else:
            self.storage = MemoryStorage()
        self.limiter = FixedWindowRateLimiter(self.storage)

    async def retry_after(self, key: str) -> int | None:
        """Count a call; None when it is allowed, else the seconds until the next window."""
        if await self.limiter.hit(self.item, key):
            return None
        stats = await self.limiter.get_window_stats(self.item, key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
