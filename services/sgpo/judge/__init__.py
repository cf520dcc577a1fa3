"""The step-wise judge: finds the first wrong step of each response; sgpo.core turns it into rts and a colored reward (docs/design.md §1, §2)."""
