"""The domain: pure decisions over a database session, no sockets."""
