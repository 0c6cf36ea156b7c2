"""The store's SQL text by table family, backend-neutral (``?`` placeholders; what differs
between SQLite and PostgreSQL is asked of :class:`jmlsync.store.dialect.Dialect` where the
statement is run). The Python that runs each statement stays in the modules beside it."""
