"""Django's PostgreSQL backend with the connection pool failing fast while the server is unreachable (``base``)."""
