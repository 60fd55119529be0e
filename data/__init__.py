"""Web-data curation for pre-training: readers, extraction, dedup, filters, classifiers, mix, shards."""
