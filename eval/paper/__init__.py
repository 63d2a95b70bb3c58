"""Our results beside the paper's: published tables, comparison with statistics, the report."""
