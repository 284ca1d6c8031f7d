"""The WebSocket side: the consumer, the hub, limits and policies, shutdown, the server adapters."""
