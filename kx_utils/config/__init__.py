"""The configuration: the profiles (``smoke``, ``mini``, ``paper``) with their checks, and the seeds each
experiment runs on."""
