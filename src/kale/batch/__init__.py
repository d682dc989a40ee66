"""Batch schedulers: submitting through PSI/J, and the queue and partition listings
PSI/J does not give."""
