"""Rate limits: a token bucket per connection fed at ``RELAY_RATE_LIMIT`` (frames), and one per
client id fed at ``RELAY_HISTORY_RATE`` (the bytes its frames store in streams)."""

import time

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """``"50/s"`` -> (50, 1): requests and seconds, as DRF's ``parse_rate``; None for no limit."""
    if rate is None:
        return None
    num, period = rate.split("/")
    return int(num), PERIODS[period.strip()[0]]


class TokenBucket:
    """Allows ``rate`` frames per second on average and bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()
        #: Frames refused in a row; a client that keeps going past a limit is abusive.
        self.refused_in_a_row = 0

    def allow(self, cost: float = 1) -> bool:
        """Take ``cost`` tokens if they are left; count the refusal otherwise."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False

    def wait(self, cost: float = 1) -> float:
        """Seconds until ``cost`` tokens would be allowed (as of the last ``allow``)."""
        return max(0.0, (cost - self.tokens) / self.rate)

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled to its burst by ``now`` (time.monotonic()): as good as a new one."""
        return self.tokens + (now - self.updated) * self.rate >= self.burst


class BucketsById:
    """One token bucket per client id, shared by the id's connections in this process.

    A bucket is made full at an id's first ``allow`` and forgotten once it is full again
    (no state is lost: a full bucket is a new one), not when the id's connections close,
    so that reconnecting does not refill it.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._swept = time.monotonic()

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, client_id: str) -> TokenBucket:
        """``client_id``'s bucket (a full one if it has none)."""
        bucket = self._buckets.get(client_id)
        if bucket is None:
            self._sweep()
            bucket = self._buckets[client_id] = TokenBucket(self.rate, self.burst)
        return bucket

    def _sweep(self) -> None:
        """Forget the buckets that are full again; at most once per time a bucket takes to refill."""
        now = time.monotonic()
        if now - self._swept < self.burst / self.rate:
            return
        self._swept = now
        for client_id in [key for key, bucket in self._buckets.items() if bucket.full(now)]:
            del self._buckets[client_id]


def bucket_for(rate: str | None, burst: int | None) -> TokenBucket | None:
    """A fresh bucket for one connection, or None when there is no limit."""
    parsed = parse_rate(rate)
    if parsed is None:
        return None
    num, seconds = parsed
    return TokenBucket(num / seconds, burst if burst is not None else num)
