"""One function per criterion id of criteria.md §3, each (Context) -> Decision."""
