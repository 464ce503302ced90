"""The end of a run: a truthful per-table summary, the overall verdict in one line,
``--report FILE.json`` for machines and ``report.md`` in the backup directory."""
from __future__ import annotations

import os
from datetime import datetime, timezone

import orjson

from . import __version__
from .log import mask


def build(command: str, *, status: str, exit_code: int, message: str, tables: list[dict],
          notes: list[str], errors: list[str], skipped: list[dict], source: str | None,
          target: str | None, partial: list[str], seconds: float, shares: dict | None = None) -> dict:
    return {
        "tool": "migrate", "version": __version__, "command": command,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": status, "exit_code": exit_code, "message": message,
        "source": source, "target": target, "seconds": round(seconds, 3),
        "run_as_uid": os.getuid(),
        "partial": partial, "tables": tables, "skipped_objects": skipped,
        "notes": notes, "errors": errors,
        **({"shares": shares} if shares else {}),
        "totals": {
            "tables": len(tables),
            "source_rows": sum(t.get("source_rows") or 0 for t in tables),
            "target_rows": sum(t.get("target_rows") or 0 for t in tables),
            "seeded_rows": sum(t.get("seeded_rows") or 0 for t in tables),
            "rejected": sum(t.get("rejected") or 0 for t in tables),
            "tables_ok": sum(1 for t in tables if t.get("verdict") == "ok"),
        },
    }


def summary_table(report: dict) -> str:
    head = ("table", "source rows", "target rows", "rejected", "checksum", "seconds")
    rows = [(t["table"], _n(t.get("source_rows")), _n(t.get("target_rows")), _n(t.get("rejected")),
             t.get("verdict", "-"), f"{t.get('seconds', 0):.2f}") for t in report["tables"]]
    tot = report["totals"]
    rows.append(("TOTAL", _n(tot["source_rows"]), _n(tot["target_rows"]), _n(tot["rejected"]),
                 f"{tot['tables_ok']}/{tot['tables']} ok", f"{report['seconds']:.2f}"))
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)  # noqa: E731
                              for i, (v, w) in enumerate(zip(r, widths)))
    sep = "  ".join("-" * w for w in widths)
    lines = [fmt(head), sep, *(fmt(r) for r in rows[:-1]), sep, fmt(rows[-1]), ""]
    lines += [f"error: {e}" for e in report["errors"]] + [f"note: {n}" for n in report["notes"]]
    lines += [f"note: table {t['table']!r}: {t['seeded_rows']} row(s) written by seed-admin, left out of the "
              "comparison" for t in report["tables"] if t.get("seeded_rows")]
    lines += [f"partial: {p}" for p in report["partial"]]
    lines.append(verdict_line(report))
    return "\n".join(lines)


def verdict_line(report: dict) -> str:
    return f"{report['status'].upper()}: {report['message']} (exit {report['exit_code']})"


def _n(v) -> str:
    return "-" if v is None else f"{v:,}"


def markdown(report: dict) -> str:
    out = [f"# migrate report: {report['status']}", "", verdict_line(report), "",
           f"- source: `{report['source']}`", f"- target: `{report['target']}`",
           f"- finished: {report['finished_at']}, {report['seconds']} s", "", "```", summary_table(report), "```"]
    for title, items in (("Errors", report["errors"]), ("Notes", report["notes"]),
                         ("Partial", report["partial"]),
                         ("Not migrated", [f"{s['kind']} {s['name']!r}: {s['reason']}" for s in report["skipped_objects"]])):
        if items:
            out += ["", f"## {title}", ""] + [f"- {i}" for i in items]
    problems = [(t["table"], p) for t in report["tables"] for p in t.get("problems", [])]
    if problems:
        out += ["", "## Differences", ""] + [f"- `{t}`: {p}" for t, p in problems]
    return mask("\n".join(out) + "\n")


def write(report: dict, path: str | None, backup_dir: str | None) -> None:
    data = mask(orjson.dumps(report, option=orjson.OPT_INDENT_2, default=str).decode())
    if path:
        _atomic(path, data)
    if backup_dir and os.path.isdir(backup_dir):
        _atomic(os.path.join(backup_dir, "report.md"), markdown(report))


def _atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
