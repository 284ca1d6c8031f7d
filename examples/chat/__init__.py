"""A small chat on the relay: messages saved by a handler, history by a call, arrivals logged."""
