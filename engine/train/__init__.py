"""SFT of the student on the curated shards: the pieces a single process can test (loss, attention masks of packed
rows, the offline tiny student); Ray Train and DeepSpeed wire them together."""
