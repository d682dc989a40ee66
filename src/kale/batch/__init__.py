"""Batch schedulers: submitting through PSI/J (or, for Slurm, through its REST API:
``slurm_rest``, ``rest_auth``, ``rest_client``, ``rest_jobs``), and the queue and partition
listings PSI/J does not give."""
