"""Segment filters: a `where` tree of `all` / `any` groups and conditions, compiled to SQL.

Values are never written into the SQL: each becomes a bound parameter, and column names are
quoted identifiers, so a value such as `x' OR 1=1 --` is only ever compared as text. Each source
compiles the tree in its own `Dialect` (placeholders `?` or `$1`, identifier quotes).

Three steps, each usable alone:

- `where_problems(tree)`: the tree's shape (operators, value counts); no schema needed.
- `core.catalog.columns.bind_where(tree, schema)`: columns and values checked against the model's real
  schema, each value turned into the column's Python type (with every other check against real
  columns, in one place).
- `segment_sql(model_sql, tree, dialect)`: `SELECT * FROM (model) AS model WHERE …` plus the
  parameters in order.

NULL semantics are SQL's: a comparison with a NULL value is not true, so `!=`, `not_in`,
`is_false` and the text operators leave out rows whose column is NULL; `is_null` selects them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

UNARY = ("is_null", "not_null", "is_true", "is_false")
COMPARISON = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
LIST_OPS = ("in", "not_in")
TEXT_OPS = ("contains", "starts_with", "ends_with")
OPERATORS = (*COMPARISON, *LIST_OPS, "between", *UNARY, *TEXT_OPS)
SCALAR = (str, int, float, bool)


# --- dialects -------------------------------------------------------------------------------------


def _double_quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _backquoted(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass(frozen=True)
class Dialect:
    """How one database spells identifiers, parameters and LIKE escapes."""

    name: str
    quote: Callable[[str], str] = _double_quoted
    dollar_params: bool = False  # PostgreSQL: $1, $2 …; others: ?
    like_escape_clause: bool = True  # `LIKE ? ESCAPE '\'`; BigQuery escapes with `\` without the clause
    setup: tuple[str, ...] = ()  # statements run once per connection
    # PostgreSQL's ADBC driver binds a timestamptz inside its own BEGIN … COMMIT (to juggle the
    # session time zone), which would end the transaction holding a segment's cursor: send
    # date-times as ISO text with a cast instead.
    timestamps_as_text: bool = False

    def mark(self, index: int) -> str:
        return f"${index}" if self.dollar_params else "?"

    def parameter(self, index: int, value: Any) -> tuple[str, Any]:
        """The placeholder text for parameter `index` (1-based) and the value to bind."""
        if self.timestamps_as_text and isinstance(value, dt.datetime):
            cast = "timestamptz" if value.tzinfo is not None else "timestamp"
            return f"CAST({self.mark(index)} AS {cast})", value.isoformat(sep=" ")
        return self.mark(index), value


DUCKDB = Dialect("duckdb")
POSTGRESQL = Dialect("postgresql", dollar_params=True, timestamps_as_text=True)
# SQLite's LIKE ignores ASCII case unless told otherwise; every other engine here is case-sensitive.
SQLITE = Dialect("sqlite", setup=("PRAGMA case_sensitive_like = ON",))
SNOWFLAKE = Dialect("snowflake")
BIGQUERY = Dialect("bigquery", quote=_backquoted, like_escape_clause=False)
ANSI = Dialect("ansi")
DIALECTS = {d.name: d for d in (DUCKDB, POSTGRESQL, SQLITE, SNOWFLAKE, BIGQUERY, ANSI)}


def quote_identifier(name: str) -> str:
    return _double_quoted(name)


# --- structure (no schema) ------------------------------------------------------------------------


def where_problems(node: Any, path: str = "") -> list[tuple[str, str]]:
    """Structural problems of a `where` tree, as (sub-path, message)."""
    if not isinstance(node, Mapping):
        return [(path, "must be a condition `{column, op, value}` or a group `{all: [...]}` / `{any: [...]}`")]
    groups = [k for k in ("all", "any") if k in node]
    if groups:
        if len(node) != 1:
            return [(path, "a group has exactly one key, `all` or `any`")]
        items = node[groups[0]]
        if not isinstance(items, list) or not items:
            return [(f"{path}.{groups[0]}", "must be a non-empty list of conditions or groups")]
        problems: list[tuple[str, str]] = []
        for index, item in enumerate(items):
            problems += where_problems(item, f"{path}.{groups[0]}[{index}]")
        return problems
    extra = set(node) - {"column", "op", "value"}
    if extra:
        return [(path, f"unknown keys {', '.join(sorted(map(str, extra)))}; a condition has column, op, value")]
    column, op = node.get("column"), node.get("op")
    if not isinstance(column, str) or not column:
        return [(f"{path}.column", "is required: the model column to test")]
    if op not in OPERATORS:
        return [(f"{path}.op", f"unknown operator `{op}`; operators are: {', '.join(OPERATORS)}")]
    value = node.get("value")
    if op in UNARY:
        return [] if "value" not in node else [(f"{path}.value", f"`{op}` takes no value")]
    values = value if isinstance(value, list) else [value]
    if any(isinstance(v, dt.date) for v in values):
        return [(f"{path}.value", 'write dates and times in quotes, e.g. "2024-01-31" or "2024-01-31T12:00:00Z"')]
    if op in LIST_OPS:
        ok = isinstance(value, list) and value and all(isinstance(v, SCALAR) for v in value)
        return [] if ok else [(f"{path}.value", f"`{op}` needs a non-empty list of values")]
    if op == "between":
        ok = isinstance(value, list) and len(value) == 2 and all(isinstance(v, SCALAR) for v in value)
        return [] if ok else [(f"{path}.value", "`between` needs a list of two values [low, high]")]
    if op in TEXT_OPS and not isinstance(value, str):
        return [(f"{path}.value", f"`{op}` needs a text value")]
    if not isinstance(value, SCALAR):
        return [(f"{path}.value", f"`{op}` needs a value (text, number or boolean)")]
    return []


# --- SQL ------------------------------------------------------------------------------------------


def compile_where(node: Mapping[str, Any], params: list[Any], dialect: Dialect = DUCKDB) -> str:
    """SQL text with the dialect's placeholders; the values are appended to `params` in order."""
    for key, joiner in (("all", " AND "), ("any", " OR ")):
        if key in node:
            return "(" + joiner.join(compile_where(item, params, dialect) for item in node[key]) + ")"
    column, op = dialect.quote(node["column"]), node["op"]
    value: Any = node.get("value")

    def mark(item: Any) -> str:
        text, bound = dialect.parameter(len(params) + 1, item)
        params.append(bound)
        return text

    if op in COMPARISON:
        return f"({column} {COMPARISON[op]} {mark(value)})"
    if op in LIST_OPS:
        marks = ", ".join(mark(item) for item in value)
        # NOT IN with the row's NULL yields NULL (row excluded), as in SQL.
        return f"({column} {'NOT IN' if op == 'not_in' else 'IN'} ({marks}))"
    if op == "between":
        return f"({column} BETWEEN {mark(value[0])} AND {mark(value[1])})"
    if op in ("is_null", "not_null"):
        return f"({column} IS {'NOT ' if op == 'not_null' else ''}NULL)"
    if op in ("is_true", "is_false"):
        return f"({column} IS {'TRUE' if op == 'is_true' else 'FALSE'})"
    pattern = _like_escape(str(value))
    placeholder = mark({"contains": f"%{pattern}%", "starts_with": f"{pattern}%", "ends_with": f"%{pattern}"}[op])
    escape = " ESCAPE '\\'" if dialect.like_escape_clause else ""
    return f"({column} LIKE {placeholder}{escape})"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def segment_sql(model_sql: str, where: Mapping[str, Any], dialect: Dialect = DUCKDB) -> tuple[str, list[Any]]:
    """Wrap a model query with a segment's filter; returns SQL with placeholders and its parameters."""
    params: list[Any] = []
    condition = compile_where(where, params, dialect)
    # New lines around the model query: a trailing `-- comment` in it must not swallow the `)`.
    return f"SELECT * FROM (\n{model_sql}\n) AS model WHERE {condition}", params
