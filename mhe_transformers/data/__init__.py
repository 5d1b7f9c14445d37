"""Offline data: the WordNet reader and its prepared tasks (wordnet), datasets loading and checks (text)."""
