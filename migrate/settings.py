"""All configuration, with one precedence order: defaults < environment < flags.

Secrets never come from flags (they would show in process listings): the target
password and the admin password come from ``*_FILE`` (a mounted secret) or the
environment. Every secret is registered with the log masker.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import UsageError

# field -> (environment variables, first wins; default; converter). README's table mirrors this.
OPTIONS: dict[str, tuple[tuple[str, ...], object, type]] = {
    "source": (("MIGRATE_SOURCE",), None, str),
    "target": (("MIGRATE_TARGET", "DATABASE_URL"), None, str),
    "backup_dir": (("MIGRATE_BACKUP_DIR",), None, str),
    "backup_compress": (("MIGRATE_BACKUP_COMPRESS",), "none", str),
    "report": (("MIGRATE_REPORT",), None, str),
    "target_schema": (("MIGRATE_TARGET_SCHEMA",), "public", str),
    "on_error": (("MIGRATE_ON_ERROR",), "fail", str),
    "orphans": (("MIGRATE_ORPHANS",), "fail", str),
    "replace": (("MIGRATE_REPLACE",), False, bool),
    "restart": (("MIGRATE_RESTART",), False, bool),
    "wait_timeout": (("MIGRATE_WAIT_TIMEOUT",), 60.0, float),
    "lock_timeout": (("MIGRATE_LOCK_TIMEOUT",), 60.0, float),
    "connect_timeout": (("MIGRATE_CONNECT_TIMEOUT",), 10, int),
    "source_timeout": (("MIGRATE_SOURCE_TIMEOUT",), 30.0, float),
    "statement_timeout": (("MIGRATE_STATEMENT_TIMEOUT",), 0.0, float),
    "log_format": (("MIGRATE_LOG_FORMAT",), "auto", str),
    "log_level": (("MIGRATE_LOG_LEVEL",), "info", str),
    "progress": (("MIGRATE_PROGRESS",), "auto", str),
    "progress_interval": (("MIGRATE_PROGRESS_INTERVAL",), 5.0, float),
    "limit": (("MIGRATE_LIMIT",), None, int),
    "workers": (("MIGRATE_WORKERS",), 2, int),
    "tables": (("MIGRATE_TABLES",), [], list),
    "exclude_tables": (("MIGRATE_EXCLUDE_TABLES",), [], list),
    "column_types": (("MIGRATE_COLUMN_TYPES",), [], list),
    "schema_file": (("MIGRATE_SCHEMA_FILE",), None, str),
    "schema_from": (("MIGRATE_SCHEMA_FROM",), None, str),
    "drop_columns": (("MIGRATE_DROP_COLUMNS",), [], list),
    "admin_table": (("MIGRATE_ADMIN_TABLE",), "user", str),
    "admin_username": (("MIGRATE_ADMIN_USERNAME",), "admin", str),
    "admin_email": (("MIGRATE_ADMIN_EMAIL",), "admin@example.com", str),
    "admin_full_name": (("MIGRATE_ADMIN_FULL_NAME",), "Administrator", str),
    "admin_role": (("MIGRATE_ADMIN_ROLE",), "admin", str),
    "admin_columns": (("MIGRATE_ADMIN_COLUMNS",), [], list),
    "update": (("MIGRATE_ADMIN_UPDATE",), False, bool),
    "generate_password": (("MIGRATE_ADMIN_GENERATE_PASSWORD",), None, str),
    "seed_admin": (("MIGRATE_SEED_ADMIN",), False, bool),
    "fill_null": (("MIGRATE_FILL_NULL",), [], list),
    "shares": (("MIGRATE_SHARES",), 1, int),
    "share_index": (("MIGRATE_SHARE_INDEX", "JOB_COMPLETION_INDEX"), None, int),
    "run_id": (("MIGRATE_RUN_ID",), None, str),
}
CHOICES = {"on_error": ("fail", "reject"), "backup_compress": ("none", "gzip"), "orphans": ("fail", "not-valid"),
           "log_format": ("auto", "json", "console"), "progress": ("auto", "bars", "events", "off"), "log_level": ("debug", "info", "warning", "error")}
SECRETS = {  # secret -> (file variable, variable)
    "target_password": ("MIGRATE_TARGET_PASSWORD_FILE", "MIGRATE_TARGET_PASSWORD"),
    "admin_password": ("MIGRATE_ADMIN_PASSWORD_FILE", "MIGRATE_ADMIN_PASSWORD"),
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _convert(name: str, raw, kind):
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        v = str(raw).strip().lower()
        if v in _TRUE | _FALSE:
            return v in _TRUE
        raise UsageError(f"{name}: expected true/false, got {raw!r}")
    if kind is list:
        return raw if isinstance(raw, list) else [x.strip() for x in str(raw).split(",") if x.strip()]
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{name}: expected {kind.__name__}, got {raw!r}") from None


def read_secret(name: str, env=os.environ) -> str | None:
    file_var, var = SECRETS[name]
    path = env.get(file_var)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().rstrip("\r\n")
        except OSError as e:
            raise UsageError(f"{file_var}={path!r}: cannot read the secret file ({e.strerror})") from None
    return env.get(var) or None


@dataclass
class Settings:
    values: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def resolve(cls, flags: dict, env=os.environ) -> "Settings":
        values = {}
        for name, (env_vars, default, kind) in OPTIONS.items():
            raw = flags.get(name)
            if raw is None or raw == []:
                raw = next((env[v] for v in env_vars if env.get(v) not in (None, "")), None)
            value = default if raw is None else _convert(name, raw, kind)
            if name in CHOICES and value not in CHOICES[name]:
                raise UsageError(f"{name.replace('_', '-')}: {value!r} is not one of {', '.join(CHOICES[name])}")
            values[name] = value
        for name, value in flags.items():  # command-specific flags with no environment form
            values.setdefault(name, value)
        secrets = {name: read_secret(name, env) for name in SECRETS}
        s = cls(values=values, secrets={k: v for k, v in secrets.items() if v})
        s.column_type_overrides()  # validated now, before anything is opened
        if s.workers < 1:
            raise UsageError(f"workers: {s.workers} is not a number of processes (1 or more)")
        s.fill_rules()
        from .log import register_secret
        for v in s.secrets.values():
            register_secret(v)
        if s.target and "${" not in s.target:
            from .postgres_target import password_of
            register_secret(password_of(s.target))
        return s

    def fill_rules(self) -> dict[str, dict[str, str]]:
        """--fill-null TABLE.COLUMN=VALUE ('@admin': the admin user's id) -> {table: {column: value}}."""
        out: dict[str, dict[str, str]] = {}
        for spec in self.fill_null:
            left, sep, value = spec.partition("=")
            tname, dot, cname = left.rpartition(".")
            if not sep or not dot or value == "":
                raise UsageError(f"--fill-null {spec!r}: expected TABLE.COLUMN=VALUE (VALUE may be @admin)")
            out.setdefault(tname, {})[cname] = value
        return out

    def column_type_overrides(self) -> dict[tuple[str, str], str]:
        from .types import PG_TYPES
        out = {}
        for spec in self.column_types:
            left, sep, typ = spec.rpartition("=")
            tname, dot, cname = left.rpartition(".")
            if not sep or not dot or typ not in PG_TYPES:
                raise UsageError(f"--column-type {spec!r}: expected TABLE.COLUMN=TYPE with TYPE one of "
                                 + ", ".join(sorted(PG_TYPES)))
            out[(tname, cname)] = typ
        return out
