"""Create `examples/demo.duckdb`: 100,000 realistic customers (and orders) for the demo and tests.

Deterministic (seeded), so the same file comes out every time. The data has what breaks naive
exporters: commas, quotes, line breaks and accents in strings, NULLs, decimals, dates,
timestamps with time zone, booleans.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent

CUSTOMERS = """
CREATE OR REPLACE TABLE customers AS
WITH first_names(i, name) AS (VALUES (0, 'Zoé'), (1, 'François'), (2, 'Ana María'), (3, 'O''Brien'),
      (4, 'Jürgen'), (5, 'Li'), (6, 'Åsa'), (7, 'Chloé "Coco"'), (8, 'Søren'), (9, 'Renée')),
     last_names(i, name) AS (VALUES (0, 'Dupont'), (1, 'Martin, Jr.'), (2, 'Nguyễn'), (3, 'Müller'),
      (4, 'García'), (5, 'Smith'), (6, 'Łukasiewicz'), (7, 'D''Angelo'), (8, 'Ødegaard'), (9, 'Brontë')),
     countries(i, code) AS (VALUES (0, 'FR'), (1, 'FR'), (2, 'DE'), (3, 'ES'), (4, 'GB'), (5, 'US'), (6, 'IT'),
      (7, 'NL'), (8, 'BE'), (9, 'SE'))
SELECT
    g.i::INTEGER                                              AS customer_id,
    f.name                                                    AS first_name,
    l.name                                                    AS last_name,
    lower(replace(f.name, ' ', '.')) || '.' || g.i || '@example.com' AS email,
    CASE WHEN g.i % 7 = 0 THEN NULL ELSE '+33 6 ' || lpad((g.i * 7919 % 100000000)::VARCHAR, 8, '0') END
                                                              AS phone,
    (18 + (g.i * 37) % 70)::SMALLINT                          AS age,
    c.code                                                    AS country,
    CASE (g.i % 4) WHEN 0 THEN 'free' WHEN 1 THEN 'pro' WHEN 2 THEN 'team' ELSE 'enterprise' END AS plan,
    (g.i % 11 = 0)                                            AS vip,
    CASE WHEN g.i % 13 = 0 THEN NULL ELSE ((g.i * 7907) % 1000000) / 100 END::DECIMAL(12, 2)
                                                              AS lifetime_value,
    DATE '2015-01-01' + ((g.i * 13) % 3650)::INTEGER           AS signup_date,
    TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds((g.i * 7727) % 31536000) AS last_seen_at,
    CASE WHEN g.i % 5 = 0 THEN 'Note: likes "quotes", commas; and' || chr(10) || 'new lines'
         WHEN g.i % 5 = 1 THEN '<b>VIP</b> & friends'
         WHEN g.i % 5 = 2 THEN NULL ELSE '' END                AS notes,
    g.i % 3 <> 0                                              AS is_active
FROM range(1, {rows} + 1) AS g(i)
JOIN first_names f ON f.i = g.i % 10
JOIN last_names l ON l.i = (g.i // 10) % 10
JOIN countries c ON c.i = (g.i // 100) % 10
ORDER BY customer_id
"""


def build(path: Path, rows: int = 100_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with duckdb.connect(str(tmp)) as con:
        con.execute("SET TimeZone='UTC'")
        con.execute(CUSTOMERS.format(rows=rows))
    tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "demo.duckdb")
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    build(args.out, args.rows)
    print(f"wrote {args.out} ({args.rows} customers)")


if __name__ == "__main__":
    main()
