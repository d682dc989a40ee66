"""Sites: other systems (a cluster's login node, a center's JupyterHub host) where Kale
runs workflows for you, reached over your own SSH.

A site is a name for an SSH destination, a Kale home there and the Python that runs Kale
there (:mod:`kale.sites.registry`, ``kale site add``). :class:`~kale.sites.site.Site`
opens one multiplexed SSH connection (:mod:`kale.sites.ssh`), starts the site's manager
when none runs, forwards its Unix socket to this machine (nothing is opened to the
network), stages the workflow's files there (rsync: only what changed) and gives the
same :class:`~kale.client.run.Run` handle as a local run, through
:class:`~kale.sites.source.SiteSource`, which re-attaches when the connection drops.
"""
