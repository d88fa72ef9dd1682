"""Everything that speaks a mail protocol or format."""
