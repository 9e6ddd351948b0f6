"""Host tuning: each module changes one kind of host setting, always through the journal."""
