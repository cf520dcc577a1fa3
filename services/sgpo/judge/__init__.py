"""The step-wise judge: finds the first wrong step of each response and colors it (DESIGN.md §1, §2)."""
