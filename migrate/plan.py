"""``plan``: what a run would do, from the source alone. Writes nothing."""
from __future__ import annotations

from .schema import Schema
from .shares import split
from .sqlite_source import SourceDB

ROWS_PER_SECOND_ESTIMATE = 100_000  # a conservative whole-run figure on 2 cores (see README benchmark)


def make_plan(src: SourceDB, schema: Schema, partial: list[str], s) -> dict:
    tables = []
    for t in schema.restore_order():
        fks = []
        for fk in t.foreign_keys:
            parent = next((p for p in schema.tables if p.name == fk.ref_table), None)
            ref = fk.ref_columns if all(fk.ref_columns) else [c.name for c in parent.pk] if parent else []
            entry = {"columns": fk.columns, "references": fk.ref_table, "ref_columns": ref}
            if parent is not None and len(ref) == len(fk.columns):
                n, sample = src.orphans(t, fk, ref)
                if n:
                    entry["orphans"] = n
                    entry["orphan_sample"] = [list(r) for r in sample]
            fks.append(entry)
        tables.append({
            "table": t.name, "pg_name": t.pg_name, "rows": t.rows, "without_rowid": t.without_rowid,
            "primary_key": [c.name for c in t.pk],
            "columns": [{"name": c.name, "pg_name": c.pg_name, "declared": c.declared, "pg_type": c.pg_type,
                         "census": {k: v for k, v in c.census.to_dict().items() if v}, "decision": c.type_reason}
                        for c in t.columns],
            "indexes": [{"name": i.name, "columns": i.columns, "unique": i.unique, "skipped": i.skipped}
                        for i in t.indexes],
            "foreign_keys": fks,
            "notes": t.notes,
        })
    rows = sum(t["rows"] for t in tables)
    plan = {"source": src.path, "restore_order": [t["table"] for t in tables], "tables": tables,
            "skipped": [sk.__dict__ for sk in schema.skipped], "partial": partial, "total_rows": rows,
            "estimated_seconds": round(rows / ROWS_PER_SECOND_ESTIMATE + 0.5 * len(tables), 1)}
    if s.shares > 1:  # how run --shares N would split the tables (shares.split, as every pod computes it)
        of = split(schema.tables, s.shares)
        plan["shares"] = [{"share": i, "tables": [t["table"] for t in tables if of[t["table"]] == i],
                           "rows": sum(t["rows"] for t in tables if of[t["table"]] == i)} for i in range(s.shares)]
        plan["keys_between_shares"] = [f"{t['table']} ({', '.join(fk['columns'])}) -> {fk['references']}"
                                       for t in tables for fk in t["foreign_keys"]
                                       if fk["references"] in of and of[fk["references"]] != of[t["table"]]]
    return plan


def render(plan: dict) -> str:
    out = [f"plan for {plan['source']}: {len(plan['tables'])} table(s), {plan['total_rows']:,} rows, "
           f"estimated {plan['estimated_seconds']} s", "", "restore order:"]
    for i, t in enumerate(plan["tables"], 1):
        name = t["table"] + (f" -> {t['pg_name']}" if t["pg_name"] != t["table"] else "")
        out.append(f"  {i}. {name} ({t['rows']:,} rows)")
        for c in t["columns"]:
            census = ", ".join(f"{k} {v}" for k, v in c["census"].items())
            target = c["pg_name"] + " " if c["pg_name"] != c["name"] else ""
            line = f"       {c['name']:<24} {c['declared'] or '(none)':<18} -> {target}{c['pg_type']:<17} [{census}]"
            if c["decision"]:
                line += f"\n         decision: {c['decision']}"
            out.append(line)
        for note in t["notes"]:
            out.append(f"       note: {note}")
        for ix in t["indexes"]:
            if ix["skipped"]:
                out.append(f"       index {ix['name']}: skipped, {ix['skipped']}")
        for fk in t["foreign_keys"]:
            if fk.get("orphans"):
                out.append(f"       foreign key ({', '.join(fk['columns'])}) -> {fk['references']}: "
                           f"{fk['orphans']} orphan row(s), e.g. {fk['orphan_sample'][:3]}")
    if plan.get("shares"):
        out += ["", f"split into {len(plan['shares'])} shares (run --shares):"]
        out += [f"  share {sh['share']}: {sh['rows']:,} rows: {', '.join(sh['tables']) or '(no table)'}"
                for sh in plan["shares"]]
        out += [f"  foreign keys between shares (added by the last share to finish): "
                f"{'; '.join(plan['keys_between_shares']) or 'none'}"]
    if plan["skipped"]:
        out += ["", "not migrated:"] + [f"  {s['kind']} {s['name']!r}: {s['reason']}" for s in plan["skipped"]]
    if plan["partial"]:
        out += ["", "partial:"] + [f"  {p}" for p in plan["partial"]]
    return "\n".join(out)
