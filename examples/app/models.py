"""The example app's own schema (SQLAlchemy): what the app expects in PostgreSQL.

Use it instead of the schema derived from SQLite with
``--schema-from examples.app.models:metadata``.
"""
from sqlalchemy import (JSON, BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Integer, LargeBinary,
                        MetaData, String, Table, Text)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

user = Table(
    "user", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("email", String(255), nullable=False),
    Column("hashed_password", String(100), nullable=True),
    Column("full_name", String(255)),
    Column("role", String(32), nullable=False, server_default="user"),
    Column("is_active", Boolean, nullable=False, server_default="true"),
    Column("created_at", DateTime, nullable=False),
)
dataset = Table(
    "dataset", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("owner_id", BigInteger, ForeignKey("user.id"), nullable=False),
    Column("meta", JSON().with_variant(JSONB(), "postgresql")),
    Column("row_count", BigInteger),
    Column("size_bytes", BigInteger),
    Column("created_at", DateTime, nullable=False),
)
trainingjob = Table(
    "trainingjob", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("dataset_id", BigInteger, ForeignKey("dataset.id"), nullable=False),
    Column("user_id", BigInteger, ForeignKey("user.id"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("hyperparams", JSON().with_variant(JSONB(), "postgresql")),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Column("accuracy", Float),
    Column("is_archived", Boolean, nullable=False, server_default="false"),
)
modelartifact = Table(
    "modelartifact", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job_id", BigInteger, ForeignKey("trainingjob.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("weights", LargeBinary),
    Column("sha256", String(64)),
    Column("metrics", JSON().with_variant(JSONB(), "postgresql")),
    Column("created_at", DateTime, nullable=False),
    Column("notes", Text, server_default=""),  # new in the Postgres version of the app: not in SQLite
)
_ = Integer  # (kept importable for apps that extend these models)
