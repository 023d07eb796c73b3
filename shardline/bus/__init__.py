"""NATS I/O: connection, signed envelopes, subjects, JetStream streams and consumers, workers."""
