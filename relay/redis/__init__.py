"""Everything that talks to Redis on the per-message path: the RESP client, the bus, presence writes."""
