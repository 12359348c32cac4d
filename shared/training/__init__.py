"""Training YouTube-8M frame-level heads on AudioSet-format embedding TFRecords."""
