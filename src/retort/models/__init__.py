"""Loading teachers and students, building pruned students, checking shared vocabularies."""
