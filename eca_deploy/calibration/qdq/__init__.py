"""The Q/DQ rewrite: where Q/DQ goes per target and layout (placement), and writing it into the graph (rewrite)."""
