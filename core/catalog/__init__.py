"""The catalog: typed objects, parsing with every problem listed, and every column check."""
