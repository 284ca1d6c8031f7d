"""Per-connection rate limits: a token bucket fed at ``RELAY_RATE_LIMIT``."""

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

    def allow(self) -> bool:
        """Take a token if one is left; count the refusal otherwise."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False

    def wait(self) -> float:
        """Seconds until the next frame would be allowed."""
        return max(0.0, (1 - self.tokens) / self.rate)


def bucket_for(rate: str | None, burst: int | None) -> TokenBucket | None:
    """A fresh bucket for one connection, or None when there is no limit."""
    parsed = parse_rate(rate)
    if parsed is None:
        return None
    num, seconds = parsed
    return TokenBucket(num / seconds, burst if burst is not None else num)
