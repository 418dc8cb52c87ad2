"""Reading: sources (DuckDB, PostgreSQL, ADBC), segment filters, column mapping, text checks."""
