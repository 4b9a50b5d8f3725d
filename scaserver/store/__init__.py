"""Persistence behind repositories (STYLE P6): SQLAlchemy Core tables, SQL and in-memory
repositories of engine values, and the Alembic migration runner."""
